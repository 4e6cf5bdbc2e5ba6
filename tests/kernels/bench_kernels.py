"""GPU bandwidth of the decode kernels at real model shapes (not a test: run it by hand).

    TRITON_INTERPRET=0 python tests/kernels/bench_kernels.py [--sweep] [--out results.json]

Weights rotate over enough copies to overflow L2, so every call streams from HBM; calls are timed
from CUDA-graph replays, so host launch overhead is left out (the graph backend's situation).
Prints microseconds and TB/s per kernel beside torch.mv; --sweep also times block configs.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
from triton.testing import do_bench

from agentfast.kernels import attention as at
from agentfast.kernels import lm_head as lh
from agentfast.kernels import matvec as mv
from agentfast.kernels import qkv_rope as qr

BF = torch.bfloat16
SHAPES = {  # name: (N, K, gated)
    "qwen3-1.7b qkv": (4096, 2048, False), "qwen3-1.7b o": (2048, 2048, False),
    "qwen3-1.7b gate_up": (6144, 2048, True), "qwen3-1.7b down": (2048, 6144, False),
    "qwen3-1.7b lm_head": (151936, 2048, False), "llama-1b down": (2048, 8192, False),
    "qwen3-8b qkv": (6144, 4096, False), "qwen3-8b down": (4096, 12288, False),
    "smollm2 qkv": (960, 576, False), "smollm2 gate_up": (1536, 576, True),
    "smollm2 down": (576, 1536, False), "smollm2 lm_head": (49152, 576, False),
}


def copies(nbytes: int) -> int:
    return min(256, max(2, triton.cdiv(256 * 2**20, nbytes)))


def bench(fn, n: int) -> float:
    """Microseconds per call of fn(i), i = 0..n-1, from a CUDA graph of n calls (no host time)."""
    fn(0)
    torch.cuda.synchronize()
    reps = max(1, 32 // n)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            for i in range(n):
                fn(i)
    return do_bench(g.replay, warmup=5, rep=50, return_mode="median") * 1e3 / (n * reps)


def bench_matvec(N, K, gated, blocks=None, norm=False):
    nb = N * K * 2 * (2 if gated else 1)
    n = copies(nb)
    ws = [torch.randn(N, K, device="cuda", dtype=BF) for _ in range(n * (2 if gated else 1))]
    x = torch.randn(K, device="cuda", dtype=BF)
    out = torch.empty(N, device="cuda", dtype=BF)
    nw = torch.ones(K, device="cuda", dtype=BF) if norm else None
    if gated:
        us = bench(lambda i: mv.launch(ws[2 * i], x, out, w_up=ws[2 * i + 1], blocks=blocks,
                                       norm_weight=nw), n)
    else:
        us = bench(lambda i: mv.launch(ws[i], x, out, blocks=blocks, norm_weight=nw), n)
    ref = bench(lambda i: torch.mv(ws[i], x), n) if not gated else None
    return dict(us=round(us, 2), TBps=round(nb / us / 1e6, 3),
                torch_TBps=round(nb / ref / 1e6, 3) if ref else None,
                cfg=blocks or mv.pick_blocks(N, K, mv.min_programs(x.device)))


def bench_attention(nh, nkv, hd, max_len, length, num_splits=None, block_t=64):
    q = torch.randn(nh, hd, device="cuda", dtype=BF)
    n = copies(2 * nkv * max_len * hd * 2)
    caches = [(torch.randn(nkv, max_len, hd, device="cuda", dtype=BF),
               torch.randn(nkv, max_len, hd, device="cuda", dtype=BF)) for _ in range(n)]
    pos = torch.tensor([length - 1], dtype=torch.int32, device="cuda")
    splits = num_splits or at.pick_num_splits(nkv, max_len, block_t)
    ws = torch.empty(at.workspace_size(nh, hd, max_len, splits), device="cuda")
    out = torch.empty_like(q)
    us = bench(lambda i: at.attention(q, *caches[i], pos, out=out, workspace=ws,
                                      num_splits=splits, block_t=block_t), n)
    nb = 2 * nkv * length * hd * 2
    return dict(us=round(us, 2), TBps=round(nb / us / 1e6, 3))


def bench_decode_step(L=28, H=2048, nh=16, nkv=8, hd=128, inter=6144, V=151936, length=1024):
    """One greedy decode step of a Qwen3-1.7B-shaped model (random weights) as one CUDA graph:
    7 launches per layer + 2. Returns us per step and weight TB/s."""
    dev, max_len = "cuda", 4096

    def w(*s):
        return torch.randn(*s, device=dev, dtype=BF) * 0.02

    def ones(n):
        return torch.ones(n, device=dev, dtype=BF)

    layers = [dict(wqkv=w((nh + 2 * nkv) * hd, H), wo=w(H, nh * hd), wg=w(inter, H),
                   wu=w(inter, H), wd=w(H, inter), ln1=ones(H), ln2=ones(H), qn=ones(hd),
                   kn=ones(hd), kc=torch.zeros(nkv, max_len, hd, device=dev, dtype=BF),
                   vc=torch.zeros(nkv, max_len, hd, device=dev, dtype=BF)) for _ in range(L)]
    wlm, lnf = w(V, H), ones(H)
    cos = torch.randn(max_len, hd, device=dev)
    sin = torch.randn(max_len, hd, device=dev)
    pos = torch.tensor([length - 1], dtype=torch.int32, device=dev)
    x = torch.randn(H, device=dev, dtype=BF)
    q = torch.empty(nh, hd, device=dev, dtype=BF)
    o = torch.empty_like(q)
    h = torch.empty(inter, device=dev, dtype=BF)
    qkv_ws = torch.empty((nh + 2 * nkv) * hd, device=dev)
    attn_ws = torch.empty(at.workspace_size(nh, hd, max_len), device=dev)
    logits = torch.empty(V, device=dev)
    tok = torch.empty(1, dtype=torch.int32, device=dev)
    P = mv.num_programs(V, H, torch.device(dev))
    am_ws = (torch.empty(P, device=dev), torch.empty(P, dtype=torch.int32, device=dev))

    def step(_):
        for ly in layers:
            qr.qkv_rope(x, ly["wqkv"], None, ly["ln1"], ly["qn"], ly["kn"], cos, sin, pos,
                        ly["kc"], ly["vc"], out=q, workspace=qkv_ws)
            at.attention(q, ly["kc"], ly["vc"], pos, out=o, workspace=attn_ws)
            mv.matvec(ly["wo"], o.view(-1), residual=x)
            mv.gate_up_silu(ly["wg"], ly["wu"], x, norm_weight=ly["ln2"], out=h)
            mv.matvec(ly["wd"], h, residual=x)
        lh.lm_head_argmax(x, lnf, wlm, 1e-6, out=tok, logits=logits, workspace=am_ws)

    nbytes = sum(t.numel() * 2 for ly in layers for k, t in ly.items() if k[0] == "w")
    nbytes += wlm.numel() * 2
    us = bench(step, 1)
    return dict(us=round(us, 1), tok_s=round(1e6 / us, 1), TBps=round(nbytes / us / 1e6, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--attn-sweep", action="store_true")
    ap.add_argument("--skip", default="", help="skip shapes whose name contains this")
    ap.add_argument("--step", action="store_true", help="also time a whole decode step")
    ap.add_argument("--norm-sweep", action="store_true", help="block configs with fused norm")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = {"gpu": torch.cuda.get_device_name(), "triton": triton.__version__}
    for name, (N, K, gated) in SHAPES.items():
        if args.skip and args.skip in name:
            continue
        res[f"matvec {name}"] = r = bench_matvec(N, K, gated)
        print(name, r, flush=True)
        if args.sweep:
            best = None
            for bn in (1, 2, 4, 8, 16):
                for bk in (512, 1024, 2048):
                    for nw in (4, 8):
                        if bk > triton.next_power_of_2(K) or triton.cdiv(N, bn) < 132:
                            continue
                        us = bench_matvec(N, K, gated, (bn, bk, nw))["us"]
                        if best is None or us < best[0]:
                            best = (us, bn, bk, nw)
            res[f"sweep {name}"] = best
            print("  best", best, flush=True)
    for nh, nkv, hd in ((16, 8, 128), (9, 3, 64)):
        for length in (128, 1024, 8192):
            r = bench_attention(nh, nkv, hd, 8192, length)
            res[f"attention {nh}/{nkv}x{hd} len {length}"] = r
            print("attention", nh, nkv, hd, length, r, flush=True)
            for ns, bt in ((16, 64), (32, 64), (32, 32), (64, 32), (32, 128)) if args.attn_sweep \
                    else ():
                r = bench_attention(nh, nkv, hd, 8192, length, ns, bt)
                res[f"attention {nh}/{nkv}x{hd} len {length} splits {ns} block {bt}"] = r
                print("  splits", ns, bt, r, flush=True)
    logits = torch.randn(151936, device="cuda")
    tok = torch.empty(1, dtype=torch.int32, device="cuda")
    res["argmax 151936 us"] = round(bench(lambda i: lh.argmax(logits, out=tok), 1), 2)
    prm = [torch.tensor([0.7], device="cuda"), torch.tensor([50], dtype=torch.int32,
           device="cuda"), torch.tensor([0.9], device="cuda"),
           torch.tensor([1], device="cuda"), torch.zeros(1, dtype=torch.int64, device="cuda")]
    res["sample sort 151936 us"] = round(bench(lambda i: lh.sample(logits, *prm, out=tok), 1), 2)
    res["sample top1024 us"] = round(
        bench(lambda i: lh.sample(logits, *prm, out=tok, max_candidates=1024), 1), 2)
    for name in ("qwen3-1.7b qkv", "qwen3-1.7b gate_up", "smollm2 gate_up") if args.norm_sweep \
            else ():
        N, K, gated = SHAPES[name]
        for cfg in (None, (1, 512, 4), (2, 1024, 4), (4, 1024, 4), (8, 512, 4), (8, 1024, 8)):
            r = bench_matvec(N, K, gated, cfg, norm=True)
            res[f"norm {name} {cfg}"] = r
            print("norm", name, r, flush=True)
    if args.step:
        for length in (128, 2048):
            res[f"qwen3-1.7b step len {length}"] = r = bench_decode_step(length=length)
            print("step", length, r, flush=True)
    for k, v in res.items():
        print(k, v)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
