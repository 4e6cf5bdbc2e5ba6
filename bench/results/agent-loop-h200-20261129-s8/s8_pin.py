"""Agent bench host time with the event-loop thread and the engine worker pinned to their own
cores (tool subprocesses moved to the others), against unpinned, alternating in one process."""
import os
import statistics
import sys

import anyio

from agentfast.agent import bench as B
from agentfast.agent import coding as CO
from agentfast.engine import Engine
from agentfast.server import scheduler as S

be = sys.argv[1]
eng = Engine.load(None, device="cuda", backend=be)
ncpu = sorted(os.sched_getaffinity(0))
LOOP, WORKER = ncpu[2], ncpu[3]
OTHERS = set(ncpu) - {LOOP, WORKER}
state = {"pin": False}
orig_loop = S.Scheduler._loop
def loop(self):
    if state["pin"]:
        os.sched_setaffinity(0, {WORKER})
    return orig_loop(self)
S.Scheduler._loop = loop
orig_open = CO.anyio.open_process
async def open_process(*a, **k):
    p = await orig_open(*a, **k)
    if state["pin"]:
        try:
            os.sched_setaffinity(p.pid, OTHERS)
        except OSError:
            pass
    return p
CO.anyio.open_process = open_process
res = {"base": [], "pin": []}
first = True
for v in ["base", "pin", "base", "pin", "base", "pin"]:
    state["pin"] = v == "pin"
    os.sched_setaffinity(0, {LOOP} if state["pin"] else set(ncpu))
    for s in list(S._SCHEDULERS.values()):
        s.close()  # a fresh worker applies the variant's affinity
    out = anyio.run(B.bench, eng, 3, 4, first)
    first = False
    h = [r["host_ms"] for run in out["runs"] for r in run]
    res[v] += h
    print(v, "median %.3f max %.3f" % (statistics.median(h), max(h)), " ".join(f"{x:.2f}" for x in h), flush=True)
for v, h in res.items():
    print(f"SUMMARY {be} {v}: {len(h)} turns, median {statistics.median(h):.3f} mean {statistics.fmean(h):.3f} max {max(h):.3f}")
