"""Final RMSNorm + LM head, device argmax, device sampling: the end of a decode step.

`lm_head`: fp32 logits [V] = W [V, K] @ rmsnorm(x) (the matvec kernel with its fused norm).
`lm_head_argmax`: the same launch also writes each program's max/argmax, and one more program
reduces them to an int32 token (greedy in two launches). `argmax`: the same two stages over given
logits. `sample`: temperature, top-k, top-p (HF order and semantics) then one draw from Philox
(tl.rand) keyed by a device seed and a device offset that the kernel increments, so CUDA-graph
replays draw fresh numbers. Candidates are ordered by torch.sort (or torch.topk with
`max_candidates`, which truncates top-p to that many tokens); both are graph-capturable but slow
(H200, 152k vocab: sort 63 us, topk(1024) 81 us, against 3.6 us for the argmax path).
Temperature <= 0 means greedy; top_k <= 0 means no top-k. No host syncs anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from . import matvec as mv


@triton.jit
def _block_argmax_kernel(x_ptr, pmax_ptr, pidx_ptr, N, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + i, mask=i < N, other=float("-inf")).to(tl.float32)  # [BLOCK]
    tl.store(pmax_ptr + pid, tl.max(v, axis=0))
    tl.store(pidx_ptr + pid, pid * BLOCK + tl.argmax(v, axis=0))


@triton.jit
def _reduce_argmax_kernel(pmax_ptr, pidx_ptr, out_ptr, P, BLOCK: tl.constexpr):
    # partial (max, index) pairs in index order -> the first index of the overall max
    best_v = tl.max(tl.full((BLOCK,), float("-inf"), tl.float32), axis=0)
    best_i = tl.min(tl.zeros((BLOCK,), tl.int32), axis=0)
    for p0 in range(0, P, BLOCK):
        p = p0 + tl.arange(0, BLOCK)
        v = tl.load(pmax_ptr + p, mask=p < P, other=float("-inf"))
        idx = tl.load(pidx_ptr + p, mask=p < P, other=0)
        bv = tl.max(v, axis=0)
        bi = tl.min(tl.where(v == bv, idx, 2147483647), axis=0)
        best_i = tl.where(bv > best_v, bi, best_i)  # strict: earlier chunks win ties
        best_v = tl.maximum(bv, best_v)
    tl.store(out_ptr, best_i)


@triton.jit
def _sample_kernel(
    val_ptr, idx_ptr, temp_ptr, topk_ptr, topp_ptr, seed_ptr, off_ptr, out_ptr, C,
    BLOCK: tl.constexpr,
):
    # val [C] logits sorted descending, idx [C] their token ids
    t = tl.load(temp_ptr)
    k = tl.load(topk_ptr)
    top_p = tl.load(topp_ptr)
    greedy = t <= 0.0
    n = tl.where(k > 0, tl.minimum(k, C), C)
    n = tl.where(greedy, 1, n)  # candidates after top-k
    inv_t = 1.0 / tl.where(greedy, 1.0, t)
    m = tl.load(val_ptr)
    z = 0.0  # pass 1: softmax denominator over the top-k candidates
    for c0 in range(0, n, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(val_ptr + c, mask=c < n, other=float("-inf"))
        z += tl.sum(tl.exp((v - m) * inv_t), axis=0)
    thr = tl.where(top_p >= 1.0, float("inf"), top_p * z)
    kept = n * 0  # pass 2: top-p keeps i while the mass before i is < top_p (a prefix)
    zp = 0.0  # mass kept
    run = 0.0  # mass of all candidates so far
    for c0 in range(0, n, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(val_ptr + c, mask=c < n, other=float("-inf"))
        e = tl.exp((v - m) * inv_t)
        before = run + tl.cumsum(e, axis=0) - e  # exclusive prefix sum
        keep = (c < n) & ((c == 0) | (before < thr))
        kept += tl.sum(keep.to(tl.int32), axis=0)
        zp += tl.sum(tl.where(keep, e, 0.0), axis=0)
        run += tl.sum(e, axis=0)
    off = tl.load(off_ptr)
    u = tl.rand(tl.load(seed_ptr), off)
    target = u * zp
    pick = kept - 1  # pass 3: first kept i with inclusive prefix sum > target
    acc = 0.0
    for c0 in range(0, kept, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(val_ptr + c, mask=c < kept, other=float("-inf"))
        e = tl.exp((v - m) * inv_t)
        hit = (c < kept) & ((acc + tl.cumsum(e, axis=0)) > target)
        pick = tl.minimum(pick, tl.min(tl.where(hit, c, 2147483647), axis=0))
        acc += tl.sum(e, axis=0)
    tl.store(out_ptr, tl.load(idx_ptr + pick).to(tl.int32))
    tl.store(off_ptr, off + 1)


def _token_out(out: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    out = torch.empty(1, dtype=torch.int32, device=device) if out is None else out
    assert out.shape == (1,) and out.dtype == torch.int32, "token out must be int32 [1]"
    return out


def _reduce(pmax: torch.Tensor, pidx: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    P = pmax.numel()
    _reduce_argmax_kernel[(1,)](pmax, pidx, out, P, BLOCK=min(4096, triton.next_power_of_2(P)),
                                num_warps=8)
    return out


def lm_head(x, norm_weight, w, eps, out=None):
    """x [K], norm_weight [K], w [V, K] -> fp32 logits out [V]."""
    out = torch.empty(w.shape[0], dtype=torch.float32, device=x.device) if out is None else out
    assert out.dtype == torch.float32, "logits are fp32"
    return mv.launch(w, x, out, norm_weight=norm_weight, eps=eps)


def lm_head_argmax(x, norm_weight, w, eps, out=None, logits=None, workspace=None):
    """Greedy: token out int32 [1] = argmax(lm_head(x)); logits fp32 [V] are written too.
    workspace: (pmax fp32 [P], pidx int32 [P]), P = matvec.num_programs(V, K, device)."""
    V, K = w.shape
    out = _token_out(out, x.device)
    logits = torch.empty(V, dtype=torch.float32, device=x.device) if logits is None else logits
    assert logits.dtype == torch.float32, "logits are fp32"
    if workspace is None:
        P = mv.num_programs(V, K, x.device)
        workspace = (torch.empty(P, dtype=torch.float32, device=x.device),
                     torch.empty(P, dtype=torch.int32, device=x.device))
    mv.launch(w, x, logits, norm_weight=norm_weight, eps=eps, partial=workspace)
    return _reduce(*workspace, out)


def argmax(logits, out=None, workspace=None, block=4096):
    """logits [V] -> token out int32 [1] (first index of the max). workspace as above with
    P = cdiv(V, block)."""
    assert logits.dim() == 1 and logits.is_contiguous(), "logits must be contiguous [V]"
    out = _token_out(out, logits.device)
    P = triton.cdiv(logits.numel(), block)
    if workspace is None:
        workspace = (torch.empty(P, dtype=torch.float32, device=logits.device),
                     torch.empty(P, dtype=torch.int32, device=logits.device))
    assert workspace[0].shape == workspace[1].shape == (P,), f"workspace must hold {P} pairs"
    _block_argmax_kernel[(P,)](logits, *workspace, logits.numel(), BLOCK=block, num_warps=8)
    return _reduce(*workspace, out)


def _check_sample_args(logits, temperature, top_k, top_p, seed, offset):
    assert logits.dim() == 1, "logits must be [V]"
    for name, t, dt in (("temperature", temperature, torch.float32),
                        ("top_k", top_k, torch.int32), ("top_p", top_p, torch.float32),
                        ("seed", seed, torch.int64), ("offset", offset, torch.int64)):
        assert t.shape == (1,) and t.dtype == dt, f"{name} must be a {dt} [1] tensor"
        assert t.device == logits.device, f"{name} must be on the logits' device"


def sample(logits, temperature, top_k, top_p, seed, offset, out=None, max_candidates=None):
    """logits [V] -> token out int32 [1]; temperature fp32 [1], top_k int32 [1], top_p fp32 [1],
    seed int64 [1], offset int64 [1] (incremented by one per call), all device tensors."""
    _check_sample_args(logits, temperature, top_k, top_p, seed, offset)
    out = _token_out(out, logits.device)
    if max_candidates is not None and max_candidates < logits.numel():
        vals, idx = torch.topk(logits.float(), max_candidates, sorted=True)
    else:
        vals, idx = torch.sort(logits.float(), descending=True, stable=True)
    _sample_kernel[(1,)](vals, idx, temperature, top_k, top_p, seed, offset, out, vals.numel(),
                         BLOCK=1024, num_warps=4)
    return out


def lm_head_ref(x, norm_weight, w, eps, out=None):
    out = torch.empty(w.shape[0], dtype=torch.float32, device=x.device) if out is None else out
    return mv.matvec_ref(w, x, norm_weight=norm_weight, eps=eps, out=out)


def lm_head_argmax_ref(x, norm_weight, w, eps, out=None, logits=None, workspace=None):
    logits = lm_head_ref(x, norm_weight, w, eps, out=logits)
    return argmax_ref(logits, out)


def argmax_ref(logits, out=None, workspace=None, block=4096):
    out = _token_out(out, logits.device)
    return out.copy_(torch.argmax(logits.float()).view(1))


def philox_uniform(seed: int, offset: int) -> float:
    """What tl.rand(seed, offset) returns for one scalar offset (Philox 4x32-10, first word)."""
    M = 0xFFFFFFFF
    c0, c1, c2, c3 = offset & M, (offset >> 32) & M, 0, 0
    k0, k1 = seed & M, (seed >> 32) & M
    for _ in range(10):
        _c0, _c2 = c0, c2
        c0 = ((0xCD9E8D57 * _c2) >> 32) ^ c1 ^ k0
        c2 = ((0xD2511F53 * _c0) >> 32) ^ c3 ^ k1
        c1, c3 = (0xCD9E8D57 * _c2) & M, (0xD2511F53 * _c0) & M
        k0, k1 = (k0 + 0x9E3779B9) & M, (k1 + 0xBB67AE85) & M
    x = c0 - (1 << 32) if c0 >= 1 << 31 else c0  # as int32
    x = ~x if x < 0 else x
    return float(np.float32(x) * np.float32(4.6566127342e-10))


def sample_ref(logits, temperature, top_k, top_p, seed, offset, out=None, max_candidates=None):
    """The same rule in torch; reads the parameters on the host (an oracle, not the hot path)."""
    _check_sample_args(logits, temperature, top_k, top_p, seed, offset)
    out = _token_out(out, logits.device)
    t, k, p = temperature.item(), top_k.item(), top_p.item()
    vals, idx = torch.sort(logits.float(), descending=True, stable=True)
    if max_candidates is not None:
        vals, idx = vals[:max_candidates], idx[:max_candidates]
    n = 1 if t <= 0 else (min(k, vals.numel()) if k > 0 else vals.numel())
    e = torch.exp((vals[:n] - vals[0]) / (t if t > 0 else 1.0))  # [n]
    before = torch.cumsum(e, 0) - e
    keep = before < p * e.sum() if p < 1.0 else torch.ones_like(e, dtype=torch.bool)
    keep[0] = True
    e = e[keep]
    u = philox_uniform(seed.item(), offset.item())
    target = torch.tensor([u * e.sum().item()], device=e.device)
    i = int(torch.searchsorted(torch.cumsum(e, 0), target, right=True))
    offset.add_(1)
    return out.fill_(int(idx[min(i, e.numel() - 1)]))
