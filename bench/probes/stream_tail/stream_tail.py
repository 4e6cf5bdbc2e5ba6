"""Probe: is a matvec op's tail (its slowest program ~11% behind the median, Llama-3.2-1B's
gate/up in the monokernel's traces) set by which rows each program streams? P programs (2 per
SM, 4 warps) meet at a grid barrier, then each streams its tiles of a weight matrix (tiles of
BN rows x K bf16, 16 KB, through a 3-stage cp.async loop as the monokernel's mv_tiles) and
reduces them; each stamps %globaltimer after the barrier and after its last tile.
  contiguous:  program p streams tiles [p * n, (p + 1) * n)  (the monokernel's runs)
  interleaved: program p streams tiles p, p + P, p + 2P, ...  (the GPU reads one moving window)
Every launch reads a fresh part of a buffer 4x the L2. Prints per mode the median and the max
of the programs' busy times (us) and the aggregate rate; JSON to $OUT/stream_tail.json.
Usage: python bench/probes/stream_tail/stream_tail.py [launches]"""
import json
import os
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _now():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                     is_pure=False, pack=1)


@triton.jit
def stream(w, x, out, cnt, stamps, ntiles, P: tl.constexpr, BN: tl.constexpr, K: tl.constexpr,
           MODE: tl.constexpr, NS: tl.constexpr):
    pid = tl.program_id(0)
    # grid barrier: every program starts streaming together (as after an op's wait)
    tl.atomic_add(cnt, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(cnt, 0, sem="acquire", scope="gpu")
    while seen < P:
        seen = tl.atomic_add(cnt, 0, sem="acquire", scope="gpu")
    t0 = _now()
    cols = tl.arange(0, K)
    xv = tl.load(x + cols).to(tl.float32)
    rows = tl.arange(0, BN)
    acc = tl.zeros((BN,), tl.float32)
    for i in tl.range(0, ntiles, num_stages=NS):
        if MODE == 0:
            tile = pid * ntiles + i
        else:
            tile = pid + i * P
        off = (tile * BN + rows).to(tl.int64)[:, None] * K + cols[None, :]
        wt = tl.load(w + off, eviction_policy="evict_first")
        acc += tl.sum(wt.to(tl.float32) * xv[None, :], axis=1)
    tl.store(out + pid * BN + rows, acc)
    t1 = _now()
    tl.store(stamps + pid * 2, t0)
    tl.store(stamps + pid * 2 + 1, t1)


def main():
    launches = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    props = torch.cuda.get_device_properties(0)
    P = 2 * props.multi_processor_count
    BN, K, NS = 4, 2048, 3  # 16 KB tiles
    ntiles = 16  # ~ Llama-3.2-1B gate/up's 15.5 tiles of 16 KB a program
    tile_elems = BN * K
    per_launch = P * ntiles * tile_elems
    l2 = getattr(props, "L2_cache_size", 50 * 2**20)
    nbuf = max(4, (4 * l2) // (per_launch * 2) + 1)
    w = torch.randn(nbuf * per_launch, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(K, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(P * BN, device="cuda", dtype=torch.float32)
    cnt = torch.zeros(1, device="cuda", dtype=torch.int32)
    stamps = torch.zeros(P * 2, device="cuda", dtype=torch.int64)
    res = {"gpu": torch.cuda.get_device_name(0), "programs": P, "tile_kb": tile_elems * 2 // 1024,
           "tiles_per_program": ntiles, "launches": launches}
    for MODE, name in ((0, "contiguous"), (1, "interleaved"), (0, "contiguous_again"),
                       (1, "interleaved_again")):
        meds, maxs, spans, rates = [], [], [], []
        for it in range(launches + 2):
            buf = w[(it % nbuf) * per_launch:(it % nbuf + 1) * per_launch]
            cnt.zero_()
            stream[(P,)](buf, x, out, cnt, stamps, ntiles, P=P, BN=BN, K=K, MODE=MODE, NS=NS,
                         num_warps=4)
            torch.cuda.synchronize()
            if it < 2:
                continue
            s = stamps.view(P, 2).double()
            busy = (s[:, 1] - s[:, 0]) / 1e3
            span = (s[:, 1].max() - s[:, 0].min()).item() / 1e3
            meds.append(busy.median().item())
            maxs.append(busy.max().item())
            spans.append(span)
            rates.append(per_launch * 2 / span / 1e6)  # TB/s
        # check the sums of the last launch against torch
        ref = (buf.view(-1, K).float() @ x.float())
        ref = ref.view(P, ntiles, BN).sum(1) if MODE == 0 else ref.view(ntiles, P, BN).sum(0)
        ok = torch.allclose(out.view(P, BN), ref, rtol=1e-3, atol=1e-2)
        med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        r = dict(busy_med_us=round(med(meds), 3), busy_max_us=round(med(maxs), 3),
                 span_us=round(med(spans), 3), tb_s=round(med(rates), 3),
                 tail_frac=round(med(maxs) / med(meds) - 1, 4), sums_ok=bool(ok))
        res[name] = r
        print(name, r, flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "stream_tail.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
