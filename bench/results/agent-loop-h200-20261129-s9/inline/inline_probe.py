"""Agent bench on the monokernel, the direct path's generation on the event loop's thread (inline)
or on the engine's worker, alternating in one process: host per turn."""
import sys, json, os, statistics, anyio
from agentfast.engine import Engine
from agentfast.agent import bench as B, direct as D
eng = Engine.load(None, backend="monokernel", device="cuda")
orig = D.EngineChat.__init__
out_dir = os.environ.get("OUT", ".")
for rnd in range(2):
    for inline in (False, True):
        D.EngineChat.__init__ = lambda self, engine, inline_=None, _i=inline: orig(self, engine, _i)
        out = anyio.run(B.bench, eng, 5, 4, True)
        h = [[r["host_ms"] for r in run] for run in out["runs"]]
        per_turn = [round(statistics.median(run[i] for run in h), 3) for i in range(len(h[0]))]
        flat = [x for r in h for x in r]
        print(f"round {rnd} inline={inline}: median {statistics.median(flat):.3f} max {max(flat):.3f} "
              f"over 1 ms {sum(x > 1.0 for x in flat)}/{len(flat)}; per turn {per_turn}", flush=True)
        json.dump(out, open(f"{out_dir}/agent_mono_inline{int(inline)}_r{rnd}.json", "w"), indent=1)
