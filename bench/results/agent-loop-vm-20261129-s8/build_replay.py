"""Warm per-turn cost of the agent's prompt build, replayed faithfully (build, then after() with the
turn's output, as the flow does)."""
import time, statistics, cProfile, pstats, sys, anyio
exec(open("bench/results/agent-loop-vm-20261129-s8/paced_bench.py").read().split("prof = len(sys.argv)")[0])
from agentfast.agent import prompt as P
LOG = []
ob, oa = P.ChatPrompts.build, P.ChatPrompts.after
def build(self, session, messages, tools):
    r = ob(self, session, messages, tools); LOG.append(["b", list(messages), tools, r]); return r
def after(self, prompt, out_ids, stop, text=None):
    LOG.append(["a", prompt, list(out_ids), stop, text]); return oa(self, prompt, out_ids, stop, text)
P.ChatPrompts.build, P.ChatPrompts.after = build, after
anyio.run(B.bench, eng, 1, 4, False)
P.ChatPrompts.build, P.ChatPrompts.after = ob, oa
log = LOG[-12:]
cp = P.ChatPrompts(eng.tokenizer)
def session(k):
    ts = []; prompt = None
    for e in log:
        if e[0] == "b":
            t0 = time.perf_counter(); prompt = cp.build(k, e[1], e[2]); ts.append(time.perf_counter() - t0)
        else:
            cp.after(prompt, e[2], e[3], e[4])
    cp.release(k)
    return ts
for _ in range(20): session("w")
R = [session("w") for _ in range(200)]
print("warm build ms per turn:", [round(statistics.median(r[i] for r in R) * 1e3, 4) for i in range(6)])
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(300): session("w")
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(22)
