"""Plain vs spec decode of the replay traces (monokernel, greedy): token lists to a JSON file."""
import json, sys, hashlib
import agentfast
from agentfast.engine import Engine, SamplingParams
from agentfast.spec_decode.replay import load_traces, _assistant_turns
print("agentfast from", agentfast.__file__, flush=True)
out = sys.argv[1]
names = sys.argv[2].split(",")
traces = {t["name"]: t for t in load_traces()}
base = Engine.load(None, device="cuda", backend="monokernel")
engs = {"plain1": base, "plain2": Engine(base.model, device="cuda", backend="monokernel"),
        "ngram": Engine(base.model, device="cuda", backend="monokernel", drafter="ngram")}
res = {}
for name in names:
    tr = traces[name]
    for tag, e in engs.items():
        toks = []
        for i in _assistant_turns(tr):
            r = e.chat(tr["messages"][:i], SamplingParams(max_tokens=128, temperature=0.0),
                       session=f"{tag}-{name}")
            toks.append(list(r.token_ids))
        e.sessions.drop(f"{tag}-{name}")
        res[f"{name}/{tag}"] = toks
        print(name, tag, hashlib.md5(json.dumps(toks).encode()).hexdigest()[:8], [len(t) for t in toks], flush=True)
json.dump(res, open(out, "w"))
