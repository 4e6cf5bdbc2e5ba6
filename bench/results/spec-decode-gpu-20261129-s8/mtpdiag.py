"""Where the MTP drafter's replay time goes on the GPU: per chat call, the time in the drafter's
propose, in verification launches, in plain launches (the _speculate loop), in prefill, and the
rest; against the plain engine on the same traces."""
import time
from collections import defaultdict

import torch

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.backends import monokernel as MK
from agentfast.spec_decode import mtp as M
from agentfast.spec_decode import replay as R

now = time.perf_counter
acc = defaultdict(float); cnt = defaultdict(int)
def wrap(obj, name, key):
    orig = getattr(obj, name)
    def f(*a, **k):
        t0 = now(); r = orig(*a, **k)
        if torch.cuda.is_available(): torch.cuda.synchronize()
        acc[key] += now() - t0; cnt[key] += 1; return r
    setattr(obj, name, f)
wrap(M.MtpDrafter, "propose", "propose")
orun = MK.MonokernelBackend._run
def run(self, kern, b, n, sampling, seen):
    t0 = now(); r = orun(self, kern, b, n, sampling, seen)
    key = "run_T1" if kern is self.kernel else "run_spec"
    acc[key] += now() - t0; cnt[key] += 1; acc[key + "_tok"] += len(r); return r
MK.MonokernelBackend._run = run
wrap(MK.MonokernelBackend, "prefill", "prefill")
traces = [t for t in R.load_traces() if t["name"] in ("plain_chat", "edit_file", "repeat_tool_output")]
base = Engine.load(None, device="cuda", backend="monokernel")
for spec in (None, "mtp"):
    eng = Engine(base.model, device="cuda", backend="monokernel", drafter=spec) if spec else base
    R.warm_up(eng)
    for _ in range(2):  # second pass: every graph / buffer exists
        acc.clear(); cnt.clear()
        p = SamplingParams(max_tokens=128, temperature=0.0)
        t0 = now(); calls = 0; toks = 0
        for tr in traces:
            msgs = tr["messages"]
            for i in [j for j, m in enumerate(msgs) if m["role"] == "assistant"]:
                c0 = now(); r = eng.chat(msgs[:i], p, session="d"); calls += 1; toks += len(r.token_ids)
                acc["chat"] += now() - c0
            eng.sessions.drop("d")
        total = now() - t0
    pol = getattr(eng.drafter, "policy", None)
    print(f"{spec or 'plain'}: {calls} calls, {toks} tokens, {total*1e3:.1f} ms; " + ", ".join(
        f"{k} {v*1e3:.1f} ms ({cnt[k]})" if not k.endswith('_tok') else f"{k} {int(v)}" for k, v in sorted(acc.items())))
    if pol is not None:
        print(f"   policy off={pol.off} switched_off={pol.switched_off} rate={pol.rate:.2f} plain_s={pol.plain_s} draft_s={pol.draft_s} verify_s={pol.verify_s} step_T={pol.step_T}")
