"""Host fill of the MTP module's K/V (spec_decode.mtp.fill_module_kv) on the GPU: ms per call by positions."""
import time, torch
from agentfast.engine.bench.models import SHAPES
from agentfast.kernels.monokernel.harness import Harness
from agentfast.spec_decode import mtp as M
cfg = SHAPES["smollm2-135m"]
h = Harness.build(cfg, 132, 1, 2048, device="cuda", dtype=torch.bfloat16,
                  mtp=lambda sd: M.build_module(cfg, M.init_module(cfg, sd), 0, "cuda", torch.bfloat16))
L = cfg.num_layers
h.cache.hidden.normal_()
toks = list(range(2000))
for n in (1, 16, 128, 1024):
    for start in (0, 900):
        ts = []
        for r in range(12):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            M.fill_module_kv(cfg, h.mtp, h.w.embed, h.w.cos, h.w.sin, h.cache.k[L], h.cache.v[L], h.cache.hidden, toks, start, start + n)
            torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
        print(f"fill n={n} start={start}: median {sorted(ts)[6]*1e3:.3f} ms min {min(ts)*1e3:.3f}", flush=True)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    M.fill_module_kv(cfg, h.mtp, h.w.embed, h.w.cos, h.w.sin, h.cache.k[L], h.cache.v[L], h.cache.hidden, toks, 900, 1028)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
