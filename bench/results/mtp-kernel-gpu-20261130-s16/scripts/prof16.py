import cProfile, pstats, sys, json
from agentfast.engine import Engine, SamplingParams
from agentfast.spec_decode.replay import load_traces
spec = sys.argv[1]
e = Engine.load(device="cuda", backend="monokernel", drafter=spec)
tr = [t for t in load_traces() if t["name"].startswith("edit")][0]
msgs = tr["messages"]
turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
p = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
def run(sess):
    out = []
    for i in turns:
        out.append(e.chat(msgs[:i], p, session=sess))
    e.sessions.drop(sess)
    return out
run("w")
pr = cProfile.Profile(); pr.enable()
rs = run("m")
pr.disable()
print(spec, [(len(r.token_ids), round(r.ttft_s * 1e3, 2), round(r.decode_s * 1e3, 2)) for r in rs])
st = pstats.Stats(pr); st.sort_stats("tottime").print_stats(15); st.sort_stats("cumulative").print_stats(25)
