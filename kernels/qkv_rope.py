"""QKV projection + optional q/k RMSNorm + RoPE + KV-cache append, for one new token.

Two launches: the matvec kernel (matvec.py) computes qkv = Wqkv @ x (+ bias) into an fp32
workspace, optionally RMS-normalizing x first; then one small program per query head (and one per
kv head, doing k and v) applies the Qwen3 per-head RMSNorm, RoPE in the HF rotate_half convention
(pairs (i, i + head_dim/2)) and stores q to `out` and k, v to the caches at position `pos`, read
from a device int32 tensor so one CUDA graph serves every step. Positions >= max_len are not
written (no host check is possible without a sync). Knows nothing about attention itself.

`rope_append_rows` is the same per-head step for C positions at once (the CUDA-graph prefill,
engine/backends/prefill.py): qkv rows [C, q + 2kv] from one GEMM, positions from a device int64
[C]; q goes out grouped by kv head, [nkv, G * C, hd] (row g * C + c for query head kvh * G + g),
the layout of one attention call per kv head.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import matvec as mv
from .attention import HEAD_DIMS


@triton.jit
def _norm_rope(a1, a2, is_q, qn_ptr, kn_ptr, cos_ptr, sin_ptr, p, eps, HEAD_DIM: tl.constexpr,
               QK_NORM: tl.constexpr):
    """One head's halves a1, a2 [HEAD_DIM / 2] at position p -> (o1, o2) fp32: the q (is_q) or
    k RMSNorm when QK_NORM, then RoPE: x * cos + rotate_half(x) * sin, rotate_half(x) =
    [-x2, x1]."""
    HALF: tl.constexpr = HEAD_DIM // 2
    d = tl.arange(0, HALF)
    if QK_NORM:
        n1 = tl.where(is_q, tl.load(qn_ptr + d), tl.load(kn_ptr + d)).to(tl.float32)
        n2 = tl.where(is_q, tl.load(qn_ptr + HALF + d), tl.load(kn_ptr + HALF + d))
        rstd = 1.0 / tl.sqrt((tl.sum(a1 * a1, axis=0) + tl.sum(a2 * a2, axis=0)) / HEAD_DIM + eps)
        a1 = a1 * rstd * n1
        a2 = a2 * rstd * n2.to(tl.float32)
    c1 = tl.load(cos_ptr + p * HEAD_DIM + d)
    c2 = tl.load(cos_ptr + p * HEAD_DIM + HALF + d)
    s1 = tl.load(sin_ptr + p * HEAD_DIM + d)
    s2 = tl.load(sin_ptr + p * HEAD_DIM + HALF + d)
    return a1 * c1 - a2 * s1, a2 * c2 + a1 * s2


@triton.jit
def _rope_append_kernel(
    qkv_ptr, qn_ptr, kn_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr,
    max_len, stride_ch, stride_ct, eps,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    QK_NORM: tl.constexpr,
):
    HALF: tl.constexpr = HEAD_DIM // 2
    h = tl.program_id(0)  # < NUM_HEADS: a query head; else kv head h - NUM_HEADS (k and v)
    d = tl.arange(0, HALF)
    p = tl.load(pos_ptr)
    is_q = h < NUM_HEADS
    # qkv layout: [q heads | k heads | v heads], each head HEAD_DIM wide
    base = h * HEAD_DIM
    a1 = tl.load(qkv_ptr + base + d)  # [HALF] first half of the head
    a2 = tl.load(qkv_ptr + base + HALF + d)  # [HALF] second half
    o1, o2 = _norm_rope(a1, a2, is_q, qn_ptr, kn_ptr, cos_ptr, sin_ptr, p, eps, HEAD_DIM,
                        QK_NORM)
    if is_q:
        tl.store(q_ptr + base + d, o1.to(q_ptr.dtype.element_ty))
        tl.store(q_ptr + base + HALF + d, o2.to(q_ptr.dtype.element_ty))
    else:
        kvh = h - NUM_HEADS
        ok = (d * 0 + p) < max_len  # [HALF] all-true or all-false
        dst = kvh * stride_ch + p * stride_ct
        tl.store(kc_ptr + dst + d, o1.to(kc_ptr.dtype.element_ty), mask=ok)
        tl.store(kc_ptr + dst + HALF + d, o2.to(kc_ptr.dtype.element_ty), mask=ok)
        vbase = (NUM_HEADS + NUM_KV_HEADS + kvh) * HEAD_DIM
        v1 = tl.load(qkv_ptr + vbase + d)
        v2 = tl.load(qkv_ptr + vbase + HALF + d)
        tl.store(vc_ptr + dst + d, v1.to(vc_ptr.dtype.element_ty), mask=ok)
        tl.store(vc_ptr + dst + HALF + d, v2.to(vc_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rope_rows_kernel(
    qkv_ptr, qn_ptr, kn_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr, C, stride_ch,
    eps, NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    QK_NORM: tl.constexpr,
):
    HALF: tl.constexpr = HEAD_DIM // 2
    G: tl.constexpr = NUM_HEADS // NUM_KV_HEADS
    NQKV: tl.constexpr = (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM
    r = tl.program_id(0)  # position row of the chunk
    h = tl.program_id(1)  # < NUM_HEADS: a query head; else kv head h - NUM_HEADS (k and v)
    d = tl.arange(0, HALF)
    p = tl.load(pos_ptr + r)
    is_q = h < NUM_HEADS
    row = qkv_ptr + r * NQKV
    base = h * HEAD_DIM
    a1 = tl.load(row + base + d).to(tl.float32)
    a2 = tl.load(row + base + HALF + d).to(tl.float32)
    o1, o2 = _norm_rope(a1, a2, is_q, qn_ptr, kn_ptr, cos_ptr, sin_ptr, p, eps, HEAD_DIM,
                        QK_NORM)
    if is_q:
        qrow = q_ptr + ((h // G) * (G * C) + (h % G) * C + r) * HEAD_DIM
        tl.store(qrow + d, o1.to(q_ptr.dtype.element_ty))
        tl.store(qrow + HALF + d, o2.to(q_ptr.dtype.element_ty))
    else:
        kvh = h - NUM_HEADS
        dst = kvh * stride_ch + p * HEAD_DIM
        tl.store(kc_ptr + dst + d, o1.to(kc_ptr.dtype.element_ty))
        tl.store(kc_ptr + dst + HALF + d, o2.to(kc_ptr.dtype.element_ty))
        vrow = row + (NUM_HEADS + NUM_KV_HEADS + kvh) * HEAD_DIM
        tl.store(vc_ptr + dst + d, tl.load(vrow + d).to(vc_ptr.dtype.element_ty))
        tl.store(vc_ptr + dst + HALF + d, tl.load(vrow + HALF + d).to(vc_ptr.dtype.element_ty))


def rope_append_rows(qkv: torch.Tensor, q_norm_weight: torch.Tensor | None,
                     k_norm_weight: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                     pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     eps: float = 1e-6, out: torch.Tensor | None = None) -> torch.Tensor:
    """qkv [C, q + 2kv] (one GEMM's rows) at positions pos (int64 [C], device, each below the
    cache's length) -> q [nkv, G * C, hd] (qkv's dtype), q/k RMSNorm (Qwen3) and RoPE applied;
    k (normed, rotated) and v written to k_cache / v_cache [nkv, max_len, hd] at pos."""
    C = qkv.shape[0]
    nkv, _, hd = k_cache.shape
    assert hd in HEAD_DIMS, f"head_dim {hd} not in {HEAD_DIMS}"
    assert v_cache.shape == k_cache.shape and k_cache.is_contiguous() and v_cache.is_contiguous()
    nh = qkv.shape[1] // hd - 2 * nkv
    assert nh > 0 and nh % nkv == 0 and qkv.shape[1] == (nh + 2 * nkv) * hd, "qkv width"
    assert qkv.is_contiguous(), "qkv must be contiguous"
    assert pos.shape == (C,) and pos.dtype == torch.int64, f"pos must be int64 [{C}]"
    assert (q_norm_weight is None) == (k_norm_weight is None), "q and k norms go together"
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape[-1] == hd, "cos/sin fp32 [., hd]"
    if out is None:
        out = torch.empty(nkv, (nh // nkv) * C, hd, dtype=qkv.dtype, device=qkv.device)
    assert out.shape == (nkv, (nh // nkv) * C, hd) and out.is_contiguous(), "out shape"
    qk_norm = q_norm_weight is not None
    _rope_rows_kernel[(C, nh + nkv)](
        qkv, q_norm_weight if qk_norm else cos, k_norm_weight if qk_norm else cos, cos, sin,
        pos, out, k_cache, v_cache, C, k_cache.stride(0), eps,
        NUM_HEADS=nh, NUM_KV_HEADS=nkv, HEAD_DIM=hd, QK_NORM=qk_norm, num_warps=1,
    )
    return out


def _shapes(w_qkv, cos, k_cache, v_cache):
    nkv, max_len, hd = k_cache.shape
    assert hd in HEAD_DIMS, f"head_dim {hd} not in {HEAD_DIMS}"
    assert v_cache.shape == k_cache.shape, "k_cache and v_cache shapes differ"
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1, "cache strides"
    q_size = w_qkv.shape[0] - 2 * nkv * hd
    assert q_size > 0 and q_size % (nkv * hd) == 0, "Wqkv rows != (heads + 2 kv heads) * hd"
    assert cos.shape[-1] == hd, "cos/sin must be [max_pos, head_dim]"
    return q_size // hd, nkv, hd


def qkv_rope(
    x: torch.Tensor,
    w_qkv: torch.Tensor,
    bias: torch.Tensor | None,
    norm_weight: torch.Tensor | None,
    q_norm_weight: torch.Tensor | None,
    k_norm_weight: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [K] -> q out [num_heads, head_dim]; k, v written to k_cache/v_cache [nkv, max_len, hd]
    at pos (int32 [1], device). w_qkv [q_size + 2 kv_size, K], bias [same rows] or None;
    norm_weight [K] fuses the input RMSNorm; q/k_norm_weight [head_dim] (both or neither);
    cos, sin [max_pos, head_dim] fp32; workspace fp32 [q_size + 2 kv_size]."""
    nh, nkv, hd = _shapes(w_qkv, cos, k_cache, v_cache)
    assert (q_norm_weight is None) == (k_norm_weight is None), "q and k norms go together"
    assert cos.shape == sin.shape and cos.dtype == sin.dtype == torch.float32, "cos/sin fp32"
    assert cos.is_contiguous() and sin.is_contiguous(), "cos/sin must be contiguous"
    assert pos.shape == (1,) and pos.dtype == torch.int32, "pos must be int32 [1]"
    for t in (q_norm_weight, k_norm_weight):
        assert t is None or (t.shape == (hd,) and t.is_contiguous()), "qk norm weight [hd]"
    rows = w_qkv.shape[0]
    if workspace is None:
        workspace = torch.empty(rows, dtype=torch.float32, device=x.device)
    assert workspace.shape == (rows,) and workspace.dtype == torch.float32, "workspace fp32"
    out = torch.empty(nh, hd, dtype=x.dtype, device=x.device) if out is None else out
    assert out.shape == (nh, hd) and out.is_contiguous(), f"out must be [{nh}, {hd}]"
    mv.launch(w_qkv, x, workspace, bias=bias, norm_weight=norm_weight, eps=eps)
    qk_norm = q_norm_weight is not None
    _rope_append_kernel[(nh + nkv,)](
        workspace, q_norm_weight if qk_norm else workspace,
        k_norm_weight if qk_norm else workspace, cos, sin, pos, out, k_cache, v_cache,
        k_cache.shape[1], k_cache.stride(0), k_cache.stride(1), eps,
        NUM_HEADS=nh, NUM_KV_HEADS=nkv, HEAD_DIM=hd, QK_NORM=qk_norm, num_warps=1,
    )
    return out


def _rms(t: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w.float()


def _rotate_half(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), dim=-1)


def qkv_rope_ref(
    x: torch.Tensor,
    w_qkv: torch.Tensor,
    bias: torch.Tensor | None,
    norm_weight: torch.Tensor | None,
    q_norm_weight: torch.Tensor | None,
    k_norm_weight: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    nh, nkv, hd = _shapes(w_qkv, cos, k_cache, v_cache)
    qkv = mv.matvec_ref(w_qkv, x, bias=bias, norm_weight=norm_weight, eps=eps,
                        out=torch.empty(w_qkv.shape[0], dtype=torch.float32, device=x.device))
    q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd])
    q, k, v = q.view(nh, hd), k.view(nkv, hd), v.view(nkv, hd)
    if q_norm_weight is not None:
        q, k = _rms(q, q_norm_weight, eps), _rms(k, k_norm_weight, eps)
    idx = pos.long()  # [1], stays on the device
    c, s = cos.index_select(0, idx), sin.index_select(0, idx)  # [1, hd]
    q = q * c + _rotate_half(q) * s
    k = k * c + _rotate_half(k) * s
    k_cache.index_copy_(1, idx, k[:, None, :].to(k_cache.dtype))
    v_cache.index_copy_(1, idx, v[:, None, :].to(v_cache.dtype))
    out = torch.empty(nh, hd, dtype=x.dtype, device=x.device) if out is None else out
    return out.copy_(q)
