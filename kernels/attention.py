"""Split-KV flash-decoding attention for one query token, GQA, optional sliding window.

Phase 1: one program per (kv head, split) reads that split's K and V once for all the query heads
of its group (padded to 16 rows for tl.dot) and writes partial (acc, max, sum) to an fp32
workspace. Phase 2: one program per query head merges the splits. The length is pos + 1, read from
a device int32 tensor. The split count is fixed at launch; the positions per split are computed on
the device from the length (the live range [max(0, len - window), len) cut into NUM_SPLITS
chunks, whole BLOCK_T blocks each), so one CUDA graph stays valid as the length grows, and at
every length all live splits have about equal work; the others exit at once. Scale
1/sqrt(head_dim). Knows nothing about RoPE or how the cache is filled.

`chunk_attention` is the prefill's: C consecutive query positions (the first one read from a
device int64 tensor) whose K/V are already in the cache, the group's query heads as rows (q
[nkv, G * C, hd], row g * C + c), each program one block of rows reading keys [lo, first + C)
block by block with the causal (and window) mask: what is read follows the positions, so one
CUDA graph serves every start (engine/backends/prefill.py).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128, 256)  # real models: 64 and 128; 16 and 32 for tiny test models


@triton.jit
def _live_range(pos_ptr, window, NUM_SPLITS: tl.constexpr, BLOCK_T: tl.constexpr,
                HAS_WINDOW: tl.constexpr):
    n = tl.load(pos_ptr) + 1  # current length
    lo = n * 0
    if HAS_WINDOW:
        lo = tl.maximum(n - window, 0)
    chunk = tl.cdiv(tl.cdiv(n - lo, NUM_SPLITS), BLOCK_T) * BLOCK_T  # positions per split
    return lo, n, chunk  # live splits: s * chunk < n - lo


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:  # fp32 caches (no tf32 rounding), and the CPU interpreter (its bf16 dot is broken)
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a, b)
    return r


@triton.jit
def _attn_split_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, ws_ptr, stride_h, stride_t, qk_scale, window,
    NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_T: tl.constexpr, HAS_WINDOW: tl.constexpr,
    IEEE: tl.constexpr,
):
    kvh = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, HEAD_DIM)
    heads = kvh * GROUP + g  # [BLOCK_G] query heads of this kv head
    gmask = g < GROUP
    # q is loaded before pos is known: the two loads overlap
    q = tl.load(q_ptr + heads[:, None] * HEAD_DIM + d[None, :], mask=gmask[:, None], other=0.0)
    lo, n, chunk = _live_range(pos_ptr, window, NUM_SPLITS, BLOCK_T, HAS_WINDOW)
    start = lo + split * chunk
    end = tl.minimum(start + chunk, n)
    if start < end:  # splits outside the live range exit here
        q = q.to(k_ptr.dtype.element_ty)  # [BLOCK_G, D], as stored: scaled after the dot
        m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_G,), tl.float32)
        acc = tl.zeros((BLOCK_G, HEAD_DIM), tl.float32)
        kv_base = kvh * stride_h
        for t0 in range(start, end, BLOCK_T):  # every block holds at least one live position
            t = t0 + tl.arange(0, BLOCK_T)
            tmask = t < end
            offs = kv_base + t[:, None] * stride_t + d[None, :]  # [BLOCK_T, D]
            k = tl.load(k_ptr + offs, mask=tmask[:, None], other=0.0)
            v = tl.load(v_ptr + offs, mask=tmask[:, None], other=0.0)  # issued before the math
            # scores in log2 units; q is not pre-scaled (q * scale rounded to 16 bits errs by
            # |score| x 2^-9 in every score)
            s = _dot(q, tl.trans(k), IEEE) * qk_scale  # [BLOCK_G, BLOCK_T]
            s = tl.where(tmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None]).to(v.dtype)  # the weights as the PV product sees them
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), axis=1)
            acc = acc * alpha[:, None] + _dot(p, v, IEEE)
            m_i = m_new
        slot = heads * NUM_SPLITS + split  # [BLOCK_G]
        tl.store(ws_ptr + slot[:, None] * HEAD_DIM + d[None, :], acc, mask=gmask[:, None])
        ml_ptr = ws_ptr + NUM_HEADS * NUM_SPLITS * HEAD_DIM
        tl.store(ml_ptr + slot, m_i, mask=gmask)
        tl.store(ml_ptr + NUM_HEADS * NUM_SPLITS + slot, l_i, mask=gmask)


@triton.jit
def _attn_reduce_kernel(
    ws_ptr, pos_ptr, out_ptr, window,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    # Static loops over every split: the loads need not wait for pos; dead splits (stale or
    # uninitialized workspace) are zeroed with tl.where after loading.
    h = tl.program_id(0)
    lo, n, chunk = _live_range(pos_ptr, window, NUM_SPLITS, BLOCK_T, HAS_WINDOW)
    n_live = tl.cdiv(n - lo, chunk)  # splits 0..n_live-1 were filled by phase 1
    m_ptr = ws_ptr + NUM_HEADS * NUM_SPLITS * HEAD_DIM + h * NUM_SPLITS
    l_ptr = m_ptr + NUM_HEADS * NUM_SPLITS
    d = tl.arange(0, HEAD_DIM)
    m_max = float("-inf")
    for s0 in tl.static_range(0, NUM_SPLITS, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = tl.load(m_ptr + s, mask=s < NUM_SPLITS, other=float("-inf"))
        live = s < n_live
        m_max = tl.maximum(m_max, tl.max(tl.where(live, m, float("-inf")), axis=0))
    acc = tl.zeros((HEAD_DIM,), tl.float32)
    den = 0.0
    for s0 in tl.static_range(0, NUM_SPLITS, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        smask = s < NUM_SPLITS
        live = s < n_live
        m = tl.load(m_ptr + s, mask=smask, other=float("-inf"))
        l_s = tl.load(l_ptr + s, mask=smask, other=0.0)
        a = tl.load(ws_ptr + (h * NUM_SPLITS + s)[:, None] * HEAD_DIM + d[None, :],
                    mask=smask[:, None], other=0.0)  # [BLOCK_S, D]
        w = tl.where(live, tl.exp2(tl.where(live, m, m_max) - m_max), 0.0)  # [BLOCK_S]
        acc += tl.sum(tl.where(live[:, None], a, 0.0) * w[:, None], axis=0)
        den += tl.sum(tl.where(live, l_s, 0.0) * w, axis=0)
    tl.store(out_ptr + h * HEAD_DIM + d, (acc / den).to(out_ptr.dtype.element_ty))


@triton.jit
def _chunk_attn_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, C, stride_h, qk_scale, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
):
    kvh = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # row g * C + c
    R = GROUP * C
    rmask = rows < R
    d = tl.arange(0, HEAD_DIM)
    first = tl.load(pos_ptr)
    qpos = first + rows % C  # [BLOCK_M]
    qoffs = (kvh * R + rows)[:, None] * HEAD_DIM + d[None, :]
    # q as stored (not pre-scaled: q * scale rounded to 16 bits errs by |score| x 2^-9 in the
    # scores: 0.06 in the outputs at scores ~40 on CPU, against 0.016 scaled after the dot and
    # 0.008 for torch's bf16 attention)
    q = tl.load(q_ptr + qoffs, mask=rmask[:, None], other=0.0)
    hi = first + C
    lo = hi * 0
    if HAS_WINDOW:
        lo = tl.maximum(first - window + 1, 0) // BLOCK_N * BLOCK_N
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    base = kvh * stride_h
    for n0 in range(lo, hi, BLOCK_N):
        kk = n0 + tl.arange(0, BLOCK_N)
        km = kk < hi
        offs = base + kk[:, None] * HEAD_DIM + d[None, :]
        k = tl.load(k_ptr + offs, mask=km[:, None], other=0.0)
        v = tl.load(v_ptr + offs, mask=km[:, None], other=0.0)
        s = _dot(q, tl.trans(k), IEEE) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        ok = km[None, :] & (kk[None, :] <= qpos[:, None])
        if HAS_WINDOW:
            ok = ok & (kk[None, :] > qpos[:, None] - window)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key yet in this row
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None]).to(v.dtype)  # the weights as the PV product sees them
        l_i = l_i * alpha + tl.sum(p.to(tl.float32), axis=1)
        acc = acc * alpha[:, None] + _dot(p, v, IEEE)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + qoffs, out.to(out_ptr.dtype.element_ty), mask=rmask[:, None])


def chunk_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    pos: torch.Tensor, sliding_window: int | None = None,
                    out: torch.Tensor | None = None, block_m: int = 64,
                    block_n: int = 64) -> torch.Tensor:
    """q [nkv, G * C, hd] (row g * C + c: query head kvh * G + g at position pos[0] + c),
    k_cache / v_cache [nkv, max_len, hd] contiguous holding the K/V of every position up to
    pos[0] + C, pos int64 [C] (device; consecutive) -> out like q: causal attention of each
    row over keys [0, its position], within the window when given."""
    nkv, R, hd = q.shape
    C = pos.shape[0]
    assert hd in HEAD_DIMS and k_cache.shape[0] == nkv and k_cache.shape[2] == hd, "shapes"
    assert R % C == 0, f"q rows {R} are not (group) x {C} positions"
    assert q.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous()
    assert v_cache.shape == k_cache.shape and pos.dtype == torch.int64, "cache / pos"
    out = torch.empty_like(q) if out is None else out
    assert out.shape == q.shape and out.is_contiguous(), "out must be like q"
    window = sliding_window or 0
    _chunk_attn_kernel[(nkv, triton.cdiv(R, block_m))](
        q, k_cache, v_cache, pos, out, C, k_cache.stride(0), LOG2E / math.sqrt(hd), window,
        GROUP=R // C, HEAD_DIM=hd, BLOCK_M=block_m, BLOCK_N=block_n, HAS_WINDOW=window > 0,
        IEEE=k_cache.dtype == torch.float32 or q.device.type == "cpu", num_warps=4,
    )
    return out


def pick_num_splits(num_kv_heads: int, max_len: int, block_t: int = 64) -> int:
    """Splits per kv head: about 128 phase-1 programs, 16 to 32 splits (H200, 8 kv heads: 16
    splits beat 32 and 64 by 1.1-1.4x at 128-8k positions; 3 kv heads: 32 wins at 8k), never
    more than max_len has blocks."""
    want = triton.next_power_of_2(triton.cdiv(128, num_kv_heads))
    return max(1, min(32, max(16, want), triton.cdiv(max_len, block_t)))


def workspace_size(num_heads: int, head_dim: int, max_len: int,
                   num_splits: int | None = None) -> int:
    """fp32 elements of the workspace: acc [H, S, D], then max [H, S], then sum [H, S]. Without
    num_splits, enough for any default split count at this max_len."""
    splits = num_splits or min(32, triton.cdiv(max_len, 16))
    return num_heads * splits * (head_dim + 2)


def attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_t: int = 64,
) -> torch.Tensor:
    """q [num_heads, D], k_cache/v_cache [num_kv_heads, max_len, D] (last dim contiguous),
    pos int32 [1] (device; length = pos + 1) -> out [num_heads, D] in q's dtype.
    workspace fp32 [workspace_size(num_heads, D, max_len, num_splits)]; num_splits defaults to
    pick_num_splits(num_kv_heads, max_len, block_t)."""
    nh, hd = q.shape
    nkv, max_len, hd_k = k_cache.shape
    assert hd == hd_k and hd in HEAD_DIMS, f"head_dim {hd} (cache {hd_k}) not in {HEAD_DIMS}"
    assert nh % nkv == 0, f"num_heads {nh} not a multiple of num_kv_heads {nkv}"
    assert q.is_contiguous(), "q must be contiguous"
    assert v_cache.shape == k_cache.shape and v_cache.stride() == k_cache.stride()
    assert k_cache.stride(-1) == 1 and k_cache.dtype == v_cache.dtype, "cache layout/dtype"
    assert pos.shape == (1,) and pos.dtype == torch.int32, "pos must be int32 [1]"
    assert block_t >= 16 and block_t & (block_t - 1) == 0, "block_t: a power of two >= 16"
    splits = num_splits or pick_num_splits(nkv, max_len, block_t)
    need = workspace_size(nh, hd, max_len, splits)
    if workspace is None:
        workspace = torch.empty(need, device=q.device)
    assert workspace.numel() >= need, f"workspace has {workspace.numel()} < {need} elements"
    assert workspace.dtype == torch.float32, "workspace must be fp32"
    out = torch.empty_like(q) if out is None else out
    assert out.shape == q.shape and out.is_contiguous(), "out must be [num_heads, head_dim]"
    group = nh // nkv
    window = sliding_window or 0
    _attn_split_kernel[(nkv, splits)](
        q, k_cache, v_cache, pos, workspace, k_cache.stride(0), k_cache.stride(1),
        LOG2E / math.sqrt(hd), window,
        NUM_HEADS=nh, GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=hd,
        NUM_SPLITS=splits, BLOCK_T=block_t, HAS_WINDOW=window > 0,
        IEEE=k_cache.dtype == torch.float32 or q.device.type == "cpu", num_warps=4,
    )
    _attn_reduce_kernel[(nh,)](
        workspace, pos, out, window, NUM_HEADS=nh, HEAD_DIM=hd, NUM_SPLITS=splits,
        BLOCK_T=block_t, BLOCK_S=min(64, triton.next_power_of_2(splits)),
        HAS_WINDOW=window > 0, num_warps=4,
    )
    return out


def attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_t: int = 64,
) -> torch.Tensor:
    nh, hd = q.shape
    nkv, max_len, _ = k_cache.shape
    qg = q.float().view(nkv, nh // nkv, hd)  # [nkv, G, D]
    s = qg @ k_cache.float().transpose(1, 2) / math.sqrt(hd)  # [nkv, G, T]
    t = torch.arange(max_len, device=q.device)
    live = t <= pos.long()  # masks instead of slicing: no host sync
    if sliding_window:
        live &= t > pos.long() - sliding_window
    p = torch.softmax(s.masked_fill(~live, float("-inf")), dim=-1)
    o = (p @ v_cache.float()).view(nh, hd)  # [nkv, G, T] x [nkv, T, D]
    out = torch.empty_like(q) if out is None else out
    return out.copy_(o)
