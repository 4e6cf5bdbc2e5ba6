"""Host fill of the MTP module's K/V on the GPU: first calls at new row counts (one per turn in
an agent loop) against repeated ones (the backend's bucketed rows)."""
import time, torch
from agentfast.engine.bench.models import SHAPES
from agentfast.kernels.monokernel.harness import Harness
from agentfast.spec_decode import mtp as M
cfg = SHAPES["smollm2-135m"]
h = Harness.build(cfg, 132, 1, 4096, device="cuda", dtype=torch.bfloat16,
                  mtp=lambda sd: M.build_module(cfg, M.init_module(cfg, sd), 0, "cuda", torch.bfloat16))
L = cfg.num_layers
h.cache.hidden.normal_()
toks = list(range(4000))
def fill(s, e):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    M.fill_module_kv(cfg, h.mtp, h.w.embed, h.w.cos, h.w.sin, h.cache.k[L], h.cache.v[L], h.cache.hidden, toks, s, e)
    torch.cuda.synchronize(); return (time.perf_counter() - t0) * 1e3
fill(0, 16)
new = [round(fill(1000, 1000 + n), 3) for n in range(37, 61)]
print("new row counts 37..60, ms:", new)
for rows in (16, 64, 256, 1024):
    ts = [fill(2000 + 7 * i, 2000 + 7 * i + rows) for i in range(10)]
    print(f"rows {rows} at moving ends: first {ts[0]:.3f} ms, median {sorted(ts)[5]:.3f}")
