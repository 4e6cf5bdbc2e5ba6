import time, statistics, anyio
exec(open("bench/results/agent-loop-vm-20261129-s8/paced_bench.py").read().split("prof = len(sys.argv)")[0])
from agentfast.agent import prompt as P
from agentfast.server import chat as C
now = time.perf_counter
T = {"grow": [], "encode": [], "build": [], "validate": [], "render": []}
og, oe, ob, orr = P.ChatPrompts._grow, C.PromptCache.encode, P.ChatPrompts.build, P.ChatPrompts._render
def g(self, *a):
    t0 = now(); r = og(self, *a); T["grow"].append(now() - t0); return r
def e(self, *a):
    t0 = now(); r = oe(self, *a); T["encode"].append(now() - t0); return r
def b(self, *a):
    t0 = now(); r = ob(self, *a); T["build"].append(now() - t0); return r
def rr(self, *a, **k):
    t0 = now(); r = orr(self, *a, **k); T["render"].append(now() - t0); return r
P.ChatPrompts._grow, C.PromptCache.encode, P.ChatPrompts.build, P.ChatPrompts._render = g, e, b, rr
anyio.run(B.bench, eng, 1, 4, True)
for k in T: T[k].clear()
anyio.run(B.bench, eng, 6, 4, False)
for k in ("build", "grow", "render", "encode"):
    xs = T[k]
    if k == "render":
        print(k, "n", len(xs)); continue
    print(k, [round(statistics.median(xs[i::6]) * 1e3, 3) for i in range(6)])
