"""Attention ops of the monokernel (Triton device functions): split-KV partials and merge.

ATTN tile = (kv head, split): rows are (query head of the group, position t), padded to a
power of two >= 16 for tl.dot (as kernels/attention.py pads the group). It applies the Qwen3
q/k RMSNorm and RoPE (rotate_half, pairs (i, i + hd/2)) to q and to the new keys, appends the
K/V of the new positions that fall inside its chunk (so no other tile reads them before they
are written: the chunk's owner writes, barriers its CTA, then reads), and runs an online
softmax (exp2, log2 units) over its chunk with the causal and sliding-window masks of each
query position. Keys [lo, pos + T) are cut into `S` chunks of whole BT blocks, computed from pos
on the device (as attention.py), so splits past the live range exit at once. ATTN_REDUCE merges
the live splits per query head. Knows nothing about weights.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .ops_mv import NOINLINE


@triton.jit
def live_range(pos, window, T: tl.constexpr, S: tl.constexpr, BT: tl.constexpr,
               HAS_WINDOW: tl.constexpr):
    n = pos + T
    lo = n * 0
    if HAS_WINDOW:
        lo = tl.maximum(pos - window + 1, 0)
    chunk = tl.cdiv(tl.cdiv(n - lo, S), BT) * BT
    return lo, n, chunk


@triton.jit
def _dot(a, b, IEEE: tl.constexpr, dt: tl.constexpr):
    if IEEE:
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a.to(dt), b.to(dt))
    return r


@triton.jit
def _norm_rope(ptr, rows_ok, d, dr, sgn, nw_ptr, c, s, eps, HD: tl.constexpr,
               QK_NORM: tl.constexpr):
    """rows [R] of pointers to a head's first element -> normed, rotated [R, HD] fp32."""
    a = tl.load(ptr[:, None] + d[None, :], mask=rows_ok[:, None], other=0.0, cache_modifier=".cg")
    ar = tl.load(ptr[:, None] + dr[None, :], mask=rows_ok[:, None], other=0.0,
                 cache_modifier=".cg")
    if QK_NORM:
        rs = 1.0 / tl.sqrt(tl.sum(a * a, axis=1) / HD + eps)
        a = a * rs[:, None] * tl.load(nw_ptr + d)[None, :]
        ar = ar * rs[:, None] * tl.load(nw_ptr + dr)[None, :]
    return a * c + sgn[None, :] * ar * s


@triton.jit(noinline=NOINLINE)
def attn_run(layer, t0, t1, pos, qkv, att_acc, att_ml, q_norm, k_norm, cos, sin, k_cache,
             v_cache, cap, window, eps, qk_scale, NH: tl.constexpr, NKV: tl.constexpr,
             HD: tl.constexpr, T: tl.constexpr, S: tl.constexpr, BT: tl.constexpr,
             M: tl.constexpr, TP2: tl.constexpr, QK_NORM: tl.constexpr,
             HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr, NSA: tl.constexpr):
    G: tl.constexpr = NH // NKV
    HALF: tl.constexpr = HD // 2
    NQKV: tl.constexpr = (NH + 2 * NKV) * HD
    dt = k_cache.dtype.element_ty
    r = tl.arange(0, M)
    g, t = r // TP2, r % TP2  # query row = (group head, position)
    rv = (g < G) & (t < T)
    d = tl.arange(0, HD)
    dr = (d + HALF) % HD
    sgn = tl.where(d < HALF, -1.0, 1.0)
    lo, n, chunk = live_range(pos, window, T, S, BT, HAS_WINDOW)
    qp = pos + t  # [M] query positions
    j = tl.arange(0, TP2)  # new positions pos + j
    kp = pos + j
    jv = j < T
    lk = k_cache + layer.to(tl.int64) * (NKV * cap * HD)
    lv = v_cache + layer.to(tl.int64) * (NKV * cap * HD)
    for tile in range(t0, t1):
        kvh = tile // S
        split = tile % S
        start = lo + split * chunk
        end = tl.minimum(start + chunk, n)
        if start < end:
            heads = kvh * G + g
            cq = tl.load(cos + qp[:, None] * HD + d[None, :], mask=rv[:, None], other=0.0)
            sq = tl.load(sin + qp[:, None] * HD + d[None, :], mask=rv[:, None], other=0.0)
            ck = tl.load(cos + kp[:, None] * HD + d[None, :], mask=jv[:, None], other=0.0)
            sk = tl.load(sin + kp[:, None] * HD + d[None, :], mask=jv[:, None], other=0.0)
            q = _norm_rope(qkv + t * NQKV + heads * HD, rv, d, dr, sgn, q_norm + layer * HD,
                           cq, sq, eps, HD, QK_NORM) * qk_scale  # [M, HD]
            k = _norm_rope(qkv + j * NQKV + NH * HD + kvh * HD, jv, d, dr, sgn,
                           k_norm + layer * HD, ck, sk, eps, HD, QK_NORM)  # [TP2, HD]
            vrow = qkv + j * NQKV + (NH + NKV) * HD + kvh * HD
            v = tl.load(vrow[:, None] + d[None, :], mask=jv[:, None], other=0.0,
                        cache_modifier=".cg")
            mine = (jv & (kp >= start) & (kp < end))[:, None]
            dst = kvh * cap * HD + kp[:, None] * HD + d[None, :]
            tl.store(lk + dst, k.to(dt), mask=mine)
            tl.store(lv + dst, v.to(dt), mask=mine)
            tl.debug_barrier()  # this CTA's new keys are visible to all its threads
            m_i = tl.full((M,), float("-inf"), tl.float32)
            l_i = tl.zeros((M,), tl.float32)
            acc = tl.zeros((M, HD), tl.float32)
            for b0 in tl.range(start, end, BT, num_stages=NSA):  # K/V blocks via cp.async
                kk = b0 + tl.arange(0, BT)
                km = kk < end
                offs = kvh * cap * HD + kk[:, None] * HD + d[None, :]
                kb = tl.load(lk + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
                vb = tl.load(lv + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
                s = _dot(q, tl.trans(kb), IEEE, dt)  # [M, BT]
                ok = km[None, :] & (kk[None, :] <= qp[:, None])
                if HAS_WINDOW:
                    ok = ok & (kk[None, :] > qp[:, None] - window)
                s = tl.where(ok, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(s - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, axis=1)
                acc = acc * alpha[:, None] + _dot(p, vb, IEEE, dt)
                m_i = m_new
            slot = (heads * S + split) * T + t  # [M]
            tl.store(att_acc + slot[:, None] * HD + d[None, :], acc, mask=rv[:, None])
            tl.store(att_ml + slot, m_i, mask=rv)
            tl.store(att_ml + NH * S * T + slot, l_i, mask=rv)


@triton.jit(noinline=NOINLINE)
def reduce_run(h0, h1, pos, att_acc, att_ml, attn, window, NH: tl.constexpr, HD: tl.constexpr,
               T: tl.constexpr, TP2: tl.constexpr, S: tl.constexpr, SP: tl.constexpr,
               BT: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """attn[t, h] = the live splits' partials of head h merged. Small enough (SP x TP2 x HD
    <= 8192): all splits are loaded at once (one round of L2 latency, not one per split)."""
    lo, n, chunk = live_range(pos, window, T, S, BT, HAS_WINDOW)
    live = tl.cdiv(n - lo, chunk)
    t = tl.arange(0, TP2)
    tv = t < T
    d = tl.arange(0, HD)
    for h in range(h0, h1):
        if SP * TP2 * HD <= 8192:
            sp = tl.arange(0, SP)
            sm = (sp < live)[:, None] & tv[None, :]  # [SP, TP2]
            slot = (h * S + sp[:, None]) * T + t[None, :]
            m = tl.load(att_ml + slot, mask=sm, other=float("-inf"), cache_modifier=".cg")
            l_s = tl.load(att_ml + NH * S * T + slot, mask=sm, other=0.0, cache_modifier=".cg")
            a = tl.load(att_acc + slot[:, :, None] * HD + d[None, None, :], mask=sm[:, :, None],
                        other=0.0, cache_modifier=".cg")  # [SP, TP2, HD]
            mx = tl.max(m, axis=0)
            m_safe = tl.where(mx == float("-inf"), 0.0, mx)
            wgt = tl.where(sm, tl.exp2(m - m_safe[None, :]), 0.0)
            den = tl.sum(l_s * wgt, axis=0)
            acc = tl.sum(a * wgt[:, :, None], axis=0)  # [TP2, HD]
        else:
            m_run = tl.full((TP2,), float("-inf"), tl.float32)
            den = tl.zeros((TP2,), tl.float32)
            acc = tl.zeros((TP2, HD), tl.float32)
            for s in range(0, live):
                slot = (h * S + s) * T + t
                m = tl.load(att_ml + slot, mask=tv, other=float("-inf"), cache_modifier=".cg")
                l_s = tl.load(att_ml + NH * S * T + slot, mask=tv, other=0.0,
                              cache_modifier=".cg")
                a = tl.load(att_acc + slot[:, None] * HD + d[None, :], mask=tv[:, None],
                            other=0.0, cache_modifier=".cg")
                m_new = tl.maximum(m_run, m)
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_run - m_safe)
                beta = tl.exp2(m - m_safe)
                acc = acc * alpha[:, None] + a * beta[:, None]
                den = den * alpha + l_s * beta
                m_run = m_new
        out = acc / tl.where(tv, den, 1.0)[:, None]
        tl.store(attn + t[:, None] * (NH * HD) + h * HD + d[None, :],
                 out.to(attn.dtype.element_ty), mask=tv[:, None])
