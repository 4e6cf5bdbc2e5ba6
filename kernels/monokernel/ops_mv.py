"""Matvec ops of the monokernel (Triton device functions): QKV, O-proj, gate/up, down.

A tile is BN weight rows x all T positions: [T, K] x [K, BN]. T = 1 takes the broadcasting FMA
path of kernels/matvec.py (fp32 [BN, BK] partial products, one reduction at the end, 16-byte
weight loads along K); T > 1 pads T to 16 and uses tl.dot (IEEE fp32 for fp32 weights and in
the interpreter). Input RMSNorm is fused the matvec.py way: W @ (x * w) scaled by rstd after
the loop (the normalized x is not rounded). Activations other programs wrote are loaded with
.cg (L2, never a stale L1 line). Knows nothing about waits: the dispatcher waits first.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Each op is its own function in the machine code: inlined, the loop invariants of every op
# are hoisted out of the persistent loop and live at once (252 registers/thread on Qwen3-1.7B
# shapes at 8 warps, against 104 noinline; see tests/monokernel/test_mk_compile.py).
NOINLINE = True

UNROLL = tl.constexpr(4)  # K steps unrolled up to this many; a runtime loop beyond


@triton.jit
def _mv_step(w_ptr, wu_ptr, rows, rmask, x_ptr, nw_ptr, k0, acc, acc_u, ss, K: tl.constexpr,
             T: tl.constexpr, TP: tl.constexpr, BK: tl.constexpr, HAS_NORM: tl.constexpr,
             GATED: tl.constexpr, IEEE: tl.constexpr):
    cols = k0 + tl.arange(0, BK)
    cm = cols < K
    wp = w_ptr + rows[:, None] * K + cols[None, :]
    wm = rmask[:, None] & cm[None, :]
    w = tl.load(wp, mask=wm, other=0.0, eviction_policy="evict_first")  # [BN, BK]
    if GATED:
        wu = tl.load(wu_ptr + rows[:, None] * K + cols[None, :], mask=wm, other=0.0,
                     eviction_policy="evict_first")
    if T == 1:
        x = tl.load(x_ptr + cols, mask=cm, other=0.0, cache_modifier=".cg").to(tl.float32)
        if HAS_NORM:
            ss += x * x
            x = x * tl.load(nw_ptr + cols, mask=cm, other=0.0)
        acc += w.to(tl.float32) * x[None, :]
        if GATED:
            acc_u += wu.to(tl.float32) * x[None, :]
    else:
        t = tl.arange(0, TP)
        xm = cm[:, None] & (t[None, :] < T)
        x = tl.load(x_ptr + t[None, :] * K + cols[:, None], mask=xm, other=0.0,
                    cache_modifier=".cg").to(tl.float32)  # [BK, TP]
        if HAS_NORM:
            ss += x * x
            x = x * tl.load(nw_ptr + cols, mask=cm, other=0.0)[:, None]
        if IEEE:
            acc += tl.dot(w.to(tl.float32), x, input_precision="ieee")
            if GATED:
                acc_u += tl.dot(wu.to(tl.float32), x, input_precision="ieee")
        else:
            xb = x.to(w.dtype)
            acc += tl.dot(w, xb)
            if GATED:
                acc_u += tl.dot(wu, xb)
    return acc, acc_u, ss


@triton.jit
def matvec_tile(w_ptr, wu_ptr, rows, rmask, x_ptr, nw_ptr, eps, K: tl.constexpr,
                T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                HAS_NORM: tl.constexpr, GATED: tl.constexpr, IEEE: tl.constexpr):
    """(y [BN, TP], y_up [BN, TP], rstd [TP]): W[rows] @ x[t] (times rstd[t] with HAS_NORM)."""
    if T == 1:
        acc = tl.zeros((BN, BK), tl.float32)
        acc_u = tl.zeros((BN, BK), tl.float32)
        ss = tl.zeros((BK,), tl.float32)
    else:
        acc = tl.zeros((BN, TP), tl.float32)
        acc_u = tl.zeros((BN, TP), tl.float32)
        ss = tl.zeros((BK, TP), tl.float32)
    if K // BK <= UNROLL:
        for k0 in tl.static_range(0, K, BK):
            acc, acc_u, ss = _mv_step(w_ptr, wu_ptr, rows, rmask, x_ptr, nw_ptr, k0, acc, acc_u,
                                      ss, K, T, TP, BK, HAS_NORM, GATED, IEEE)
    else:
        for k0 in range(0, K, BK):
            acc, acc_u, ss = _mv_step(w_ptr, wu_ptr, rows, rmask, x_ptr, nw_ptr, k0, acc, acc_u,
                                      ss, K, T, TP, BK, HAS_NORM, GATED, IEEE)
    if T == 1:
        y = tl.reshape(tl.sum(acc, axis=1), (BN, 1))
        y_u = tl.reshape(tl.sum(acc_u, axis=1), (BN, 1))
        rstd = tl.zeros((1,), tl.float32) + 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
    else:
        y, y_u = acc, acc_u
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
    if HAS_NORM:
        y = y * rstd[None, :]
        y_u = y_u * rstd[None, :]
    return y, y_u, rstd


@triton.jit(noinline=NOINLINE)
def qkv_run(layer, n0, n1, x, qkv, w_qkv, b_qkv, attn_norm, eps, H: tl.constexpr,
            NQKV: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr):
    """qkv[t, n0:n1] = rmsnorm(x[t]) @ Wqkv[layer, n0:n1].T (+ bias), fp32."""
    w = w_qkv + layer.to(tl.int64) * (NQKV * H)
    t = tl.arange(0, TP)
    for r0 in range(n0, n1, BN):
        rows = r0 + tl.arange(0, BN)
        rm = rows < n1
        y, _u, _r = matvec_tile(w, w, rows, rm, x, attn_norm + layer * H, eps, H, T, TP, BN,
                                BK, True, False, IEEE)
        if HAS_BIAS:
            y += tl.load(b_qkv + layer * NQKV + rows, mask=rm, other=0.0)[:, None]
        tl.store(qkv + t[None, :] * NQKV + rows[:, None], y, mask=rm[:, None] & (t[None, :] < T))


@triton.jit(noinline=NOINLINE)
def proj_run(layer, n0, n1, src, x, w_all, bias, eps, H: tl.constexpr, K: tl.constexpr,
             T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
             HAS_BIAS: tl.constexpr, IEEE: tl.constexpr):
    """x[t, n0:n1] += W[layer, n0:n1] @ src[t] (+ bias): O-proj (src = attn) or down (act)."""
    w = w_all + layer.to(tl.int64) * (H * K)
    t = tl.arange(0, TP)
    for r0 in range(n0, n1, BN):
        rows = r0 + tl.arange(0, BN)
        rm = rows < n1
        y, _u, _r = matvec_tile(w, w, rows, rm, src, src, eps, K, T, TP, BN, BK, False, False,
                                IEEE)
        if HAS_BIAS:
            y += tl.load(bias + layer * H + rows, mask=rm, other=0.0)[:, None]
        m = rm[:, None] & (t[None, :] < T)
        xp = x + t[None, :] * H + rows[:, None]
        y += tl.load(xp, mask=m, other=0.0, cache_modifier=".cg").to(tl.float32)
        tl.store(xp, y.to(x.dtype.element_ty), mask=m)


@triton.jit(noinline=NOINLINE)
def gateup_run(layer, n0, n1, x, act, w_gu, mlp_norm, eps, H: tl.constexpr, FF: tl.constexpr,
               T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               IEEE: tl.constexpr):
    """act[t, n0:n1] = silu(Wg @ n(x)) * (Wu @ n(x)), Wg/Wu rows of the fused [2I, H]."""
    w = w_gu + layer.to(tl.int64) * (2 * FF * H)
    t = tl.arange(0, TP)
    for r0 in range(n0, n1, BN):
        rows = r0 + tl.arange(0, BN)
        rm = rows < n1
        g, u, _r = matvec_tile(w, w + FF * H, rows, rm, x, mlp_norm + layer * H, eps, H, T, TP,
                               BN, BK, True, True, IEEE)
        a = g * tl.sigmoid(g) * u
        tl.store(act + t[None, :] * FF + rows[:, None], a.to(act.dtype.element_ty),
                 mask=rm[:, None] & (t[None, :] < T))
