"""How fast can a few SMs read HBM? Read bandwidth of N persistent Triton programs (one per SM,
N = 1 .. all SMs), each streaming its own slice of a large bf16 buffer through the pipeliner's
cp.async stages, per (warps, block, stages); every timed repetition reads memory no earlier one
touched (past L2). The question behind it (#4, SmolLM2-135M's 4,000 tok/s bar): the
monokernel's per-op chain costs ~2.5 us on 264 programs that sync through L2; a design that
keeps a small model's step on one thread-block cluster (<= 16 SMs, syncing through distributed
shared memory) needs those few SMs to stream the weights (270 MB a step) fast enough.
Usage (a GPU): python bench/probes/sm_bw/sm_bw.py > out.json
"""

from __future__ import annotations

import json
import sys

import torch
import triton
import triton.language as tl

REPS = 3


@triton.jit
def _read(src, out, per_prog, BLOCK: tl.constexpr, NS: tl.constexpr):
    pid = tl.program_id(0)
    base = src + pid.to(tl.int64) * per_prog
    acc = tl.zeros((BLOCK,), tl.float32)
    for i in tl.range(0, per_prog // BLOCK, num_stages=NS):
        acc += tl.load(base + i * BLOCK + tl.arange(0, BLOCK), cache_modifier=".cg",
                       eviction_policy="evict_first").to(tl.float32)
    tl.store(out + pid, tl.sum(acc, axis=0))


def _time(buf, out, n: int, per: int, block: int, ns: int, warps: int) -> float:
    """Seconds per pass of n programs over per elements each; pass r reads region r."""
    def run(r: int) -> None:
        _read[(n,)](buf[r * n * per:], out, per, BLOCK=block, NS=ns, num_warps=warps)

    run(REPS)  # compile and warm up on a region the timed passes do not read
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(True), torch.cuda.Event(True)
    e0.record()
    for r in range(REPS):
        run(r)
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / 1e3 / REPS


def main() -> None:
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    elems = 2 << 30  # 4 GiB of bf16
    buf = torch.randn(elems, device=dev, dtype=torch.bfloat16)
    out = torch.empty(sms, device=dev, dtype=torch.float32)
    res = {"gpu": torch.cuda.get_device_name(dev), "sms": sms, "rows": []}
    configs = [(8, 16384, 3), (8, 16384, 5), (8, 8192, 5), (4, 16384, 5)]
    for n in (1, 2, 4, 8, 16, 32, 66, sms):
        per = min(16 << 20, elems // (n * (REPS + 1)) // 65536 * 65536)  # elements a program
        for warps, block, ns in configs:
            s = _time(buf, out, n, per, block, ns, warps)
            gbs = n * per * 2 / s / 1e9
            row = {"programs": n, "warps": warps, "block": block, "stages": ns,
                   "GBps": round(gbs, 1), "GBps_per_sm": round(gbs / n, 1)}
            res["rows"].append(row)
            print(row, file=sys.stderr, flush=True)
    best: dict = {}
    for r in res["rows"]:
        if r["programs"] not in best or r["GBps"] > best[r["programs"]]["GBps"]:
            best[r["programs"]] = r
    res["best_per_count"] = best
    print(json.dumps(res))


if __name__ == "__main__":
    main()
