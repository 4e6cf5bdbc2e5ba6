"""Per-launch log of the monokernel's device-drafting path on json_tool_call under the tool-call
grammar (replay --tools) against plain decode: kernel T, steps, tokens, time, pause state."""
import json, sys, time
from agentfast.engine import Engine
from agentfast.kernels.monokernel import weights as W
from agentfast.spec_decode.replay import load_traces, _assistant_turns, turn_params, warm_up

log = []


def wrap(eng, tag):
    be = eng.backend
    orig = be._follow

    def f(kern, b, n_steps, sampling, seen, sink=None):
        s0, t0 = int(b.state[W.STEPS]), time.perf_counter()
        r = yield from orig(kern, b, n_steps, sampling, seen, sink)
        log.append({"eng": tag, "T": kern.plan.T, "n_req": n_steps,
                    "steps": int(b.state[W.STEPS]) - s0, "tokens": r - seen,
                    "ms": round(1e3 * (time.perf_counter() - t0), 3),
                    "done": int(b.state[W.DONE]), "ewma": int(b.state[W.D_EWMA]) / W.Q16,
                    "floor": int(b.state[W.D_FLOOR]) / W.Q16})
        return r
    be._follow = f


names = sys.argv[2].split(",")
traces = [t for t in load_traces() if t["name"] in names]
base = Engine.load(None, device="cuda", backend="monokernel")
plain = Engine(base.model, device="cuda", backend="monokernel")
spec = Engine(base.model, device="cuda", backend="monokernel", drafter="ngram")
tools = traces[0]["tools"]
warm_up(plain, tools=tools)
warm_up(spec, tools=tools)
wrap(plain, "plain"); wrap(spec, "ngram")
out = {}
for tr in traces:
    for tag, e in (("plain", plain), ("ngram", spec)):
        for use_tools in (True, False):
            n0 = len(log)
            t0 = time.perf_counter()
            toks = []
            for i in _assistant_turns(tr):
                r = e.chat(tr["messages"][:i], turn_params(tr, i, 128, use_tools), session="d")
                toks.append(len(r.token_ids))
            e.sessions.drop("d")
            dt = time.perf_counter() - t0
            L = log[n0:]
            key = f"{tr['name']}/{tag}/tools={use_tools}"
            out[key] = {"seconds": round(dt, 4), "tokens": toks, "launches": L}
            byT = {}
            for x in L:
                s = byT.setdefault(x["T"], [0, 0, 0, 0.0])
                s[0] += 1; s[1] += x["steps"]; s[2] += x["tokens"]; s[3] += x["ms"]
            print(key, f"{dt:.3f} s", toks, {T: f"{n} launches {st} steps {tk} tokens {ms:.1f} ms ({ms / max(st, 1):.3f} ms/step)" for T, (n, st, tk, ms) in byT.items()}, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
