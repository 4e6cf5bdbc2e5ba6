"""Matvec ops of the monokernel (Triton device functions): QKV, O-proj, gate/up, down, and the
weight stream of the LM head.

A program's run of an op is rows [n0, n1) of one weight, cut in tiles of BN rows and K steps of
BK columns. `mv_stream` walks the run's (tile, K step) chunks in one flat loop and loads chunk
c + 1 (weights, and the activations of its columns) before it multiplies chunk c, so two chunks
are in flight at every moment, across tile boundaries too: with one or two persistent programs
per SM that, not the number of programs, is what keeps HBM busy. At the end of each tile the
op's epilogue runs (EPI): QKV (bias, fp32 store), RESID (bias + residual into x: O-proj and
down), GATEUP (silu(g) * u) or LM (fp32 logits and per-tile argmax / Gumbel / softmax partials).

T = 1 takes the broadcasting FMA path (fp32 [BN, BK] partial products, one reduction per tile,
16-byte weight loads along K); so does T <= 4 where whole-row tiles of the plan's few rows fit
(Plan.fma_t: `mv_tiles_t`, [BN, T, BK] products; H200 SmolLM2 T = 4 step 1,063 -> 834 us);
other T > 1 pads T to TP = 16 and uses a batched tl.dot, x^T [NB, TP,
BK/NB] x W^T [NB, BK/NB, BN], whose batch (K slices) the warps share out: each warp reads only
its own weights from shared memory (a plain [BN, BK] x [BK, TP] dot had every warp read every
weight: a T = 4 step cost 4.7 T = 1 steps, now ~1.5-1.9: bench/results/monokernel-tsteps-20261129);
IEEE fp32 for fp32 weights and in the interpreter. Input RMSNorm is fused the matvec.py way:
W @ (x * w) scaled by rstd (T = 1: sum of squares gathered during the first tile's K steps;
T > 1: before the chunk loop; the normalized x is not rounded to the weights' type).
Activations other programs wrote are loaded with .cg (L2, never a stale L1 line). Knows nothing
about waits: the dispatcher waits first.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import weights as W
from .sync import ll_pack, mark, wait_args

# Each op is its own function in the machine code: inlined, the loop invariants of every op
# are hoisted out of the persistent loop and live at once (252 registers/thread on Qwen3-1.7B
# shapes at 8 warps, against 104 noinline; see tests/monokernel/test_mk_compile.py).
NOINLINE = True

E_QKV, E_RESID, E_GATEUP, E_LM, E_QKV_LL = (tl.constexpr(i) for i in range(5))
BIG = tl.constexpr(2147483647)
W_POS, W_N_HIST = tl.constexpr(W.POS), tl.constexpr(W.N_HIST)
W_M_FILL, W_FILL_END = tl.constexpr(W.M_FILL), tl.constexpr(W.FILL_END)
GREEDY = tl.constexpr(W.GREEDY)
TEMPERATURE = tl.constexpr(W.TEMPERATURE)


@triton.jit
def _weights(w_ptr, wu_ptr, off, wm, GATED: tl.constexpr):
    """The weights at offsets `off` (masked by `wm`), and the up rows' too when GATED; read
    once (evict first)."""
    w = tl.load(w_ptr + off, mask=wm, other=0.0, eviction_policy="evict_first")
    wu = w
    if GATED:
        wu = tl.load(wu_ptr + off, mask=wm, other=0.0, eviction_policy="evict_first")
    return w, wu


@triton.jit
def _row_tile(w_ptr, wu_ptr, n0, n1, c, K: tl.constexpr, BN: tl.constexpr, cols, cm,
              GATED: tl.constexpr):
    """Tile c of a run of whole rows [n0, n1) (BK >= K): its rows, their mask and weights
    [BN, BK] (gate and up when GATED)."""
    rows = n0 + c * BN + tl.arange(0, BN)
    rm = rows < n1
    w, wu = _weights(w_ptr, wu_ptr, rows[:, None] * K + cols[None, :],
                     rm[:, None] & cm[None, :], GATED)
    return rows, rm, w, wu


@triton.jit
def _wchunk(w_ptr, wu_ptr, n0, n1, c, KS: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, GATED: tl.constexpr):
    """Weights [BN, BK] of chunk c of the run (gate and up when GATED); past the run's end
    (rows >= n1) fully masked: no memory traffic."""
    rows = n0 + (c // KS) * BN + tl.arange(0, BN)
    cols = (c % KS) * BK + tl.arange(0, BK)
    wm = (rows < n1)[:, None] & (cols < K)[None, :]
    off = rows[:, None] * K + cols[None, :]
    return _weights(w_ptr, wu_ptr, off, wm, GATED)


@triton.jit
def _xchunk(x_ptr, nw_ptr, c, KS: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
            HAS_NORM: tl.constexpr):
    """T = 1: inputs of chunk c's columns, x [BK] (fp32, times the norm weight), and x * x
    for the norm."""
    cols = (c % KS) * BK + tl.arange(0, BK)
    cm = cols < K
    x = tl.load(x_ptr + cols, mask=cm, other=0.0, cache_modifier=".cg").to(tl.float32)
    sq = x * x
    if HAS_NORM:
        x = x * tl.load(nw_ptr + cols, mask=cm, other=0.0)
    return x, sq


@triton.jit
def _wchunk3(w_ptr, wu_ptr, n0, n1, c, KS: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
             BK: tl.constexpr, NB: tl.constexpr, GATED: tl.constexpr):
    """T > 1: chunk c's weights as [NB, BK / NB, BN], W^T cut along K into NB slices: the
    operand of a batched dot whose batch is spread over the warps (one K slice per warp), so
    no warp reads another's weights out of shared memory."""
    BKS: tl.constexpr = BK // NB
    rows = n0 + (c // KS) * BN + tl.arange(0, BN)
    cols = ((c % KS) * BK + tl.arange(0, NB)[:, None, None] * BKS
            + tl.arange(0, BKS)[None, :, None])  # [NB, BKS, 1]
    wm = (rows < n1)[None, None, :] & (cols < K)
    off = rows[None, None, :] * K + cols
    return _weights(w_ptr, wu_ptr, off, wm, GATED)


@triton.jit
def _xchunk3(x_ptr, nw_ptr, c, KS: tl.constexpr, K: tl.constexpr, T: tl.constexpr,
             TP: tl.constexpr, BK: tl.constexpr, NB: tl.constexpr, HAS_NORM: tl.constexpr,
             DT: tl.constexpr):
    """T > 1: chunk c's inputs as [NB, TP, BK / NB] (times the norm weight), the dot's other
    operand (positions >= T masked: no memory traffic). The pipeliner copies them (and the
    norm weights) to shared memory ahead like the weights: a load and a multiply, no
    reduction, per chunk. Normalized inputs come as two bf16 parts, hi + lo, each multiplied
    (two dots): the product then carries ~16 bits of x, as the T = 1 path's fp32 FMA does,
    so a T > 1 step's logits (speculative verification) stay those of T = 1 steps."""
    BKS: tl.constexpr = BK // NB
    t = tl.arange(0, TP)
    cols = ((c % KS) * BK + tl.arange(0, NB)[:, None, None] * BKS
            + tl.arange(0, BKS)[None, None, :])  # [NB, 1, BKS]
    cm = cols < K
    x = tl.load(x_ptr + t[None, :, None] * K + cols, mask=cm & (t < T)[None, :, None],
                other=0.0, cache_modifier=".cg")  # [NB, TP, BKS]
    lo = x.to(DT)
    if HAS_NORM:  # x * w in fp32, then as hi + lo in the dot's operand type (bf16: ~16 bits)
        x = x.to(tl.float32) * tl.load(nw_ptr + cols, mask=cm, other=0.0)
        hi = x.to(DT)
        lo = (x - hi.to(tl.float32)).to(DT)
        x = hi
    return x.to(DT), lo  # (lo unused without a norm, and for fp32 weights)


@triton.jit
def _rstd(x_ptr, eps, K: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, BK: tl.constexpr):
    """T > 1: 1 / rms of each position's x [TP] (1 past T), before the chunk loop. The K
    steps are unrolled: independent loads, in flight together (one L2 round trip, not K / BK
    dependent ones)."""
    t = tl.arange(0, TP)
    ss = tl.zeros((TP,), tl.float32)
    for k0 in tl.static_range(0, K, BK):
        cols = k0 + tl.arange(0, BK)
        xm = (cols < K)[None, :] & (t[:, None] < T)
        xs = tl.load(x_ptr + t[:, None] * K + cols[None, :], mask=xm, other=0.0,
                     cache_modifier=".cg").to(tl.float32)  # [TP, BK]
        ss += tl.sum(xs * xs, axis=1)
    return 1.0 / tl.sqrt(ss / K + eps)


@triton.jit
def _fma(acc, w, x, T: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr):
    if T == 1:
        if RED:  # reduce each chunk: the accumulator is [BN], not [BN, BK] (registers)
            acc += tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        else:
            acc += w.to(tl.float32) * x[None, :]
    elif IEEE:  # [NB, TP, BKS] x [NB, BKS, BN]
        acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    else:
        acc += tl.dot(x, w)
    return acc


@triton.jit
def _epilogue(y, yu, rows, rm, tile, out, b_ptr, aux0, aux1, aux2, aux3, mode, inv_t, key, res,
              pre, OUT_LD: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, HAS_BIAS: tl.constexpr,
              EPI: tl.constexpr, SAMPLING: tl.constexpr, NT: tl.constexpr):
    """One finished tile, y / yu [BN, TP] (normalized already). QKV: out = qkv (fp32);
    QKV_LL (T = 1, Tiling.qkv_ll): also aux0 = the same values as words tagged `key`;
    RESID: out = x (residual, in place; `pre` != 0: the residual is `res`, loaded earlier, else
    loaded here); GATEUP: out = act; LM: out = logits, aux = lm_val, lm_idx, lm_stat's maxima
    and its sums (aux3)."""
    t = tl.arange(0, TP)
    tv = t < T
    m2 = rm[:, None] & tv[None, :]
    op = out + t[None, :] * OUT_LD + rows[:, None]
    if HAS_BIAS:
        y += tl.load(b_ptr + rows, mask=rm, other=0.0)[:, None]
    if (EPI == E_QKV) | (EPI == E_QKV_LL):
        tl.store(op, y, mask=m2)
        if EPI == E_QKV_LL:
            tl.store(aux0 + t[None, :] * OUT_LD + rows[:, None], ll_pack(y, key), mask=m2)
    elif EPI == E_RESID:
        if pre != 0:
            y += res
        else:
            y += tl.load(op, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
        tl.store(op, y.to(out.dtype.element_ty), mask=m2)
    elif EPI == E_GATEUP:
        tl.store(op, (y * tl.sigmoid(y) * yu).to(out.dtype.element_ty), mask=m2)
    else:
        tl.store(op, y, mask=m2)
        v = tl.where(m2, y, float("-inf"))  # [BN, TP]
        if SAMPLING:  # noqa: SIM102 (constexpr, then runtime: one condition would not fold)
            if mode != GREEDY:
                sc = v * inv_t
                mx = tl.max(sc, axis=0)
                base = tl.where(mx == float("-inf"), 0.0, mx)  # (padded positions: no nan)
                tl.store(aux2 + t * NT + tile, mx, mask=tv)
                tl.store(aux3 + t * NT + tile, tl.sum(tl.exp(sc - base[None, :]), axis=0),
                         mask=tv)
                if mode == TEMPERATURE:
                    u = tl.rand(key[None, :], rows[:, None])
                    v = sc - tl.log(-tl.log(u))
        pm = tl.max(v, axis=0)  # [TP]
        pi = tl.min(tl.where(v == pm[None, :], rows[:, None], BIG), axis=0)
        tl.store(aux0 + t * NT + tile, pm, mask=tv)
        tl.store(aux1 + t * NT + tile, pi, mask=tv)


@triton.jit
def mv_stream(w_ptr, wu_ptr, n0, n1, x_ptr, nw_ptr, eps, out, b_ptr, aux0, aux1, aux2, aux3,
              mode, inv_t, key, sy, K: tl.constexpr, OUT_LD: tl.constexpr, T: tl.constexpr,
              TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, HAS_NORM: tl.constexpr,
              GATED: tl.constexpr, HAS_BIAS: tl.constexpr, EPI: tl.constexpr,
              SAMPLING: tl.constexpr, NT: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr,
              NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr):
    """out[t, rows] = epilogue(W[rows] @ norm(x[t])) for the rows [n0, n1) of a [*, K] weight,
    after waiting for the producer of x (`sy`: sync.wait_args); tiles are numbered from row 0
    (tile = row // BN) for the LM partials. NS: pipeline stages of the chunk loop. RED (T = 1):
    each chunk is reduced as it arrives into a [BN] accumulator instead of [BN, BK] partial
    products (fewer registers, a cross-thread sum per chunk). Returns the wait's verdict (1:
    done; 0: stalled, recorded)."""
    KS: tl.constexpr = (K + BK - 1) // BK
    NB: tl.constexpr = max(1, min(NW, BK // 16))  # T > 1: K slices, one per warp
    SPLIT: tl.constexpr = (T > 1) & HAS_NORM & (not IEEE)  # normalized x as hi + lo
    total = ((n1 - n0 + BN - 1) // BN) * KS
    ok = wait_args(sy, NW, USE_PTX)
    if (ok == 1) & (sy[9] == 1):
        if T == 1:
            if RED:
                acc = tl.zeros((BN,), tl.float32)
            else:
                acc = tl.zeros((BN, BK), tl.float32)
            ss = tl.zeros((BK,), tl.float32)
        else:
            acc = tl.zeros((NB, TP, BN), tl.float32)
            rstd3 = tl.full((TP,), 1.0, tl.float32)
            if HAS_NORM:
                rstd3 = _rstd(x_ptr, eps, K, T, TP, min(BK, 8192 // TP))
                mark(sy, 2, tl.sum(rstd3, axis=0), USE_PTX)  # timeline: rms known
        acc_u = acc
        # Triton's pipeliner turns these loads into cp.async copies to shared memory, NS - 1
        # chunks ahead: bytes in flight without registers
        for c in tl.range(0, total, num_stages=NS):
            if T == 1:
                w, wu = _wchunk(w_ptr, wu_ptr, n0, n1, c, KS, K, BN, BK, GATED)
                x, sq = _xchunk(x_ptr, nw_ptr, c, KS, K, BK, HAS_NORM)
                if HAS_NORM:  # x is the same for every tile: the first tile's chunks suffice
                    ss += tl.where(c < KS, sq, 0.0)
            else:
                w, wu = _wchunk3(w_ptr, wu_ptr, n0, n1, c, KS, K, BN, BK, NB, GATED)
                x, lo = _xchunk3(x_ptr, nw_ptr, c, KS, K, T, TP, BK, NB, HAS_NORM,
                                 w_ptr.dtype.element_ty)
            acc = _fma(acc, w, x, T, IEEE, RED)
            if GATED:
                acc_u = _fma(acc_u, wu, x, T, IEEE, RED)
            if SPLIT:
                acc = _fma(acc, w, lo, T, IEEE, RED)
                if GATED:
                    acc_u = _fma(acc_u, wu, lo, T, IEEE, RED)
            if c % KS == KS - 1:
                if T == 1:
                    if RED:
                        y = tl.reshape(acc, (BN, 1))
                        yu = tl.reshape(acc_u, (BN, 1))
                    else:
                        y = tl.reshape(tl.sum(acc, axis=1), (BN, 1))
                        yu = tl.reshape(tl.sum(acc_u, axis=1), (BN, 1))
                else:  # the warps' K slices summed: [NB, TP, BN] -> [BN, TP]
                    y = tl.trans(tl.sum(acc, axis=0))
                    yu = tl.trans(tl.sum(acc_u, axis=0))
                if HAS_NORM:
                    if T == 1:
                        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)  # scalar
                    else:
                        rstd = rstd3  # [TP]
                    y = y * rstd
                    yu = yu * rstd
                r0 = n0 + (c // KS) * BN
                rows = r0 + tl.arange(0, BN)
                _epilogue(y, yu, rows, rows < n1, r0 // BN, out, b_ptr, aux0, aux1, aux2, aux3,
                          mode, inv_t, key, y, 0, OUT_LD, T, TP, HAS_BIAS, EPI, SAMPLING, NT)
                if c < KS:  # timeline: the first tile done, then the last
                    mark(sy, 3, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
                mark(sy, 4, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
                acc = tl.zeros_like(acc)
                acc_u = tl.zeros_like(acc_u)
    return ok


@triton.jit
def mv_tiles(w_ptr, wu_ptr, n0, n1, x_ptr, nw_ptr, eps, out, b_ptr, sy, K: tl.constexpr,
             OUT_LD: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, HAS_NORM: tl.constexpr,
             GATED: tl.constexpr, HAS_BIAS: tl.constexpr, EPI: tl.constexpr, NS: tl.constexpr,
             NW: tl.constexpr, USE_PTX: tl.constexpr, part=None, PART: tl.constexpr = False,
             ll=None, tag=0, NWE: tl.constexpr = False):
    """T = 1, BK >= K: one chunk per tile of BN whole rows, x loaded (and normalized) once. The
    wait for x's producer sits in the loop's first iteration, so the pipeliner's prologue, the
    first NS - 1 tiles' weights (cp.async to shared memory), is in flight while it waits. NWE
    (Tiling.norm_early): the RMSNorm weights, constant, are requested before the wait and held
    in registers across it, instead of loaded after x's sum of squares (one dependent round
    trip fewer after the wake).
    PART (Plan.oproj_merge): O-proj's sum waits in `part` [H] fp32: the normed input is
    round(x + part) (GATEUP); RESID (DOWN) adds round(x + part) as the residual and zeroes its
    rows of part. QKV_LL: `ll` gets the outputs as words tagged `tag` too (the tags alone,
    values 0, where the compute is skipped: timing variants)."""
    cols = tl.arange(0, BK)
    cm = cols < K
    x = tl.zeros((BK,), tl.float32)
    rstd = 1.0
    ok = 0
    RR: tl.constexpr = 128  # RESID: runs of up to RR rows load their residual once
    rr = tl.arange(0, RR)
    res_all = tl.zeros((RR,), tl.float32)
    pre = (n1 - n0 <= RR).to(tl.int32)  # (read by RESID epilogues only)
    nw = x
    if HAS_NORM and NWE:
        nw = tl.load(nw_ptr + cols, mask=cm, other=0.0)
    for c in tl.range(0, (n1 - n0 + BN - 1) // BN, num_stages=NS):
        rows, rm, w, wu = _row_tile(w_ptr, wu_ptr, n0, n1, c, K, BN, cols, cm, GATED)
        if c == 0:
            ok = wait_args(sy, NW, USE_PTX)
            x = tl.load(x_ptr + cols, mask=cm, other=0.0, cache_modifier=".cg").to(tl.float32)
            if PART and (EPI != E_RESID):  # the residual O-proj left in part
                x = (x + tl.load(part + cols, mask=cm, other=0.0, cache_modifier=".cg")).to(
                    x_ptr.dtype.element_ty).to(tl.float32)
            if HAS_NORM:
                rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / K + eps)
                if not NWE:
                    nw = tl.load(nw_ptr + cols, mask=cm, other=0.0)
                x = x * nw
            mark(sy, 2, tl.sum(x, axis=0), USE_PTX)  # timeline: x loaded
            if EPI == E_RESID:  # with x: one round trip, not one per tile in the epilogues
                lim = tl.where(n1 - n0 <= RR, n1 - n0, 0)  # rows to load (0: tile by tile)
                res_all = tl.load(out + n0 + rr, mask=rr < lim, other=0.0,
                                  cache_modifier=".cg").to(tl.float32)
                if PART:
                    res_all = (res_all + tl.load(part + n0 + rr, mask=rr < lim, other=0.0,
                                                 cache_modifier=".cg")).to(
                        out.dtype.element_ty).to(tl.float32)
        if (ok == 1) & (sy[9] == 1):
            y = tl.reshape(tl.sum(w.to(tl.float32) * x[None, :], axis=1) * rstd, (BN, 1))
            yu = y
            if GATED:
                yu = tl.reshape(tl.sum(wu.to(tl.float32) * x[None, :], axis=1) * rstd, (BN, 1))
            res = y
            pre_t = pre
            if EPI == E_RESID:  # this tile's rows of the run's residual
                sel = rr[None, :] == (rows - n0)[:, None]  # [BN, RR]
                res = tl.reshape(tl.sum(tl.where(sel, res_all[None, :], 0.0), axis=1), (BN, 1))
                if PART:
                    if pre == 0:  # a long run: this tile's residual, x + part, here
                        xr = tl.load(out + rows, mask=rm, other=0.0, cache_modifier=".cg")
                        pr = tl.load(part + rows, mask=rm, other=0.0, cache_modifier=".cg")
                        res = tl.reshape((xr.to(tl.float32) + pr).to(out.dtype.element_ty).to(
                            tl.float32), (BN, 1))
                        pre_t = 1
                    tl.store(part + rows, tl.zeros((BN,), tl.float32), mask=rm)
            _epilogue(y, yu, rows, rm, 0, out, b_ptr, ll, out, out, out, 0, 1.0, tag, res,
                      pre_t, OUT_LD, 1, 1, HAS_BIAS, EPI, False, 1)
            if c == 0:  # timeline: the first tile done, then the last
                mark(sy, 3, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
            mark(sy, 4, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
        if EPI == E_QKV_LL:  # noqa: SIM102 (constexpr, then runtime)
            if (ok == 1) & (sy[9] == 0):
                tl.store(ll + rows, ll_pack(tl.zeros((BN,), tl.float32), tag), mask=rm)
    return ok


@triton.jit
def mv_tiles_t(w_ptr, wu_ptr, n0, n1, x_ptr, nw_ptr, eps, out, b_ptr, sy, K: tl.constexpr,
               OUT_LD: tl.constexpr, T: tl.constexpr, TP2: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, HAS_NORM: tl.constexpr, GATED: tl.constexpr,
               HAS_BIAS: tl.constexpr, EPI: tl.constexpr, NS: tl.constexpr, NW: tl.constexpr,
               USE_PTX: tl.constexpr, part=None, PART: tl.constexpr = False):
    """T > 1, BK >= K (Plan.fma_t): mv_tiles for the step's T positions. Tiles of BN whole
    rows, as at T = 1 (every program has some; tl.dot needs 16 rows a tile), weights through
    the pipeliner; the inputs x [TP2, BK] loaded (and normalized) once after the wait; each
    tile's [BN, TP2, BK] fp32 products reduced along K (plan.fma_t_blocks keeps them within
    Tiling.fma_t_elems). RESID: a run of up to 128 rows loads its residual with x, after the
    wait (one round trip, not one per tile). PART (Plan.narrow_merge): as mv_tiles', part
    [T, H]."""
    cols = tl.arange(0, BK)
    cm = cols < K
    t = tl.arange(0, TP2)
    tv = t < T
    x = tl.zeros((TP2, BK), tl.float32)
    rstd = tl.full((TP2,), 1.0, tl.float32)
    ok = 0
    RR: tl.constexpr = 128  # RESID: runs of up to RR rows load their residual once
    rr = tl.arange(0, RR)
    res_all = tl.zeros((RR, TP2), tl.float32)
    pre = (n1 - n0 <= RR).to(tl.int32)  # (read by RESID epilogues only)
    for c in tl.range(0, (n1 - n0 + BN - 1) // BN, num_stages=NS):
        rows, rm, w, wu = _row_tile(w_ptr, wu_ptr, n0, n1, c, K, BN, cols, cm, GATED)
        if c == 0:
            ok = wait_args(sy, NW, USE_PTX)
            x = tl.load(x_ptr + t[:, None] * K + cols[None, :], mask=tv[:, None] & cm[None, :],
                        other=0.0, cache_modifier=".cg").to(tl.float32)
            if PART and (EPI != E_RESID):  # the residual O-proj left in part
                x = (x + tl.load(part + t[:, None] * K + cols[None, :],
                                 mask=tv[:, None] & cm[None, :], other=0.0,
                                 cache_modifier=".cg")).to(x_ptr.dtype.element_ty).to(tl.float32)
            if HAS_NORM:
                rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / K + eps)
                x = x * tl.load(nw_ptr + cols, mask=cm, other=0.0)[None, :]
            mark(sy, 2, tl.sum(tl.sum(x, axis=1), axis=0), USE_PTX)  # timeline: x loaded
            if EPI == E_RESID:  # with x: one round trip, not one per tile in the epilogues
                lim = tl.where(n1 - n0 <= RR, n1 - n0, 0)  # rows to load (0: tile by tile)
                ro = t[None, :] * OUT_LD + (n0 + rr)[:, None]  # [RR, TP2]
                r2 = (rr < lim)[:, None] & tv[None, :]
                res_all = tl.load(out + ro, mask=r2, other=0.0,
                                  cache_modifier=".cg").to(tl.float32)
                if PART:  # round(x + part); the run's rows of part zeroed
                    res_all = (res_all + tl.load(part + ro, mask=r2, other=0.0,
                                                 cache_modifier=".cg")).to(
                        out.dtype.element_ty).to(tl.float32)
                    tl.store(part + ro, tl.zeros((RR, TP2), tl.float32), mask=r2)
        if (ok == 1) & (sy[9] == 1):
            y = tl.sum(w.to(tl.float32)[:, None, :] * x[None, :, :], axis=2) * rstd[None, :]
            yu = y
            if GATED:
                yu = tl.sum(wu.to(tl.float32)[:, None, :] * x[None, :, :], axis=2) * rstd[None, :]
            res = y
            pre_t = pre
            if EPI == E_RESID:  # this tile's rows of the run's residual
                sel = rr[None, :] == (rows - n0)[:, None]  # [BN, RR]
                res = tl.sum(tl.where(sel[:, :, None], res_all[None, :, :], 0.0), axis=1)
                if PART:  # noqa: SIM102 (constexpr, then runtime)
                    if pre == 0:  # a long run: this tile's residual, x + part, here
                        po = t[None, :] * OUT_LD + rows[:, None]
                        pm = rm[:, None] & tv[None, :]
                        xr = tl.load(out + po, mask=pm, other=0.0, cache_modifier=".cg")
                        pr = tl.load(part + po, mask=pm, other=0.0, cache_modifier=".cg")
                        res = (xr.to(tl.float32) + pr).to(out.dtype.element_ty).to(tl.float32)
                        pre_t = 1
                        tl.store(part + po, tl.zeros((BN, TP2), tl.float32), mask=pm)
            _epilogue(y, yu, rows, rm, 0, out, b_ptr, out, out, out, out, 0, 1.0, 0, res, pre_t,
                      OUT_LD, T, TP2, HAS_BIAS, EPI, False, 1)
            if c == 0:  # timeline: the first tile done, then the last
                mark(sy, 3, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
            mark(sy, 4, tl.sum(tl.sum(y, axis=1), axis=0), USE_PTX)
    return ok


@triton.jit(noinline=NOINLINE)
def qkv_run(layer, n0, n1, x, qkv, w_qkv, b_qkv, attn_norm, eps, sy, H: tl.constexpr,
            NQKV: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr,
            NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr, FT: tl.constexpr = False,
            TP2: tl.constexpr = 1, ll=None, tag=0, LL: tl.constexpr = False,
            NWE: tl.constexpr = False):
    """qkv[t, n0:n1] = rmsnorm(x[t]) @ Wqkv[layer, n0:n1].T (+ bias), fp32. FT: T > 1 on the
    FMA path (mv_tiles_t, TP2 = T rounded up to a power of two). LL (Plan.qkv_ll: T = 1,
    whole-row tiles): also into `ll` as words tagged `tag`, which attention polls. NWE: see
    mv_tiles."""
    w = w_qkv + layer.to(tl.int64) * (NQKV * H)
    tl.static_assert(not LL or ((T == 1) & (BK >= H)), "qkv_ll: T = 1, whole-row tiles")
    if (T == 1) & (BK >= H):
        return mv_tiles(w, w, n0, n1, x, attn_norm + layer * H, eps, qkv, b_qkv + layer * NQKV,
                        sy, H, NQKV, BN, BK, True, False, HAS_BIAS, E_QKV_LL if LL else E_QKV,
                        NS, NW, USE_PTX, None, False, ll, tag, NWE)
    if FT:
        return mv_tiles_t(w, w, n0, n1, x, attn_norm + layer * H, eps, qkv,
                          b_qkv + layer * NQKV, sy, H, NQKV, T, TP2, BN, BK, True, False,
                          HAS_BIAS, E_QKV, NS, NW, USE_PTX)
    return mv_stream(w, w, n0, n1, x, attn_norm + layer * H, eps, qkv, b_qkv + layer * NQKV,
                     qkv, qkv, qkv, qkv, 0, 1.0, 0, sy, H, NQKV, T, TP, BN, BK, True, False,
                     HAS_BIAS, E_QKV, False, 1, IEEE, RED, NS, NW, USE_PTX)


@triton.jit(noinline=NOINLINE)
def proj_run(layer, n0, n1, src, x, w_all, bias, eps, sy, H: tl.constexpr, K: tl.constexpr,
             T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
             HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr, NS: tl.constexpr,
             NW: tl.constexpr, USE_PTX: tl.constexpr, FT: tl.constexpr = False,
             TP2: tl.constexpr = 1, part=None, PART: tl.constexpr = False):
    """x[t, n0:n1] += W[layer, n0:n1] @ src[t] (+ bias): O-proj (src = attn) or down (act).
    PART (down, Plan.oproj_merge): the residual is round(x + part), part's rows zeroed."""
    tl.static_assert(not PART or (BK >= K), "PART: whole-row tiles only")
    tl.static_assert(not PART or (T == 1) or FT, "PART: T = 1, or the FMA path")
    w = w_all + layer.to(tl.int64) * (H * K)
    if (T == 1) & (BK >= K):
        return mv_tiles(w, w, n0, n1, src, src, eps, x, bias + layer * H, sy, K, H, BN, BK,
                        False, False, HAS_BIAS, E_RESID, NS, NW, USE_PTX, part, PART)
    if FT:
        return mv_tiles_t(w, w, n0, n1, src, src, eps, x, bias + layer * H, sy, K, H, T, TP2,
                          BN, BK, False, False, HAS_BIAS, E_RESID, NS, NW, USE_PTX, part, PART)
    return mv_stream(w, w, n0, n1, src, src, eps, x, bias + layer * H, x, x, x, x, 0, 1.0, 0, sy,
                     K, H, T, TP, BN, BK, False, False, HAS_BIAS, E_RESID, False, 1, IEEE, RED,
                     NS, NW, USE_PTX)


@triton.jit(noinline=NOINLINE)
def gateup_run(layer, n0, n1, x, act, w_gu, mlp_norm, eps, sy, H: tl.constexpr,
               FF: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr, NS: tl.constexpr,
               NW: tl.constexpr, USE_PTX: tl.constexpr, FT: tl.constexpr = False,
               TP2: tl.constexpr = 1, part=None, PART: tl.constexpr = False,
               NWE: tl.constexpr = False):
    """act[t, n0:n1] = silu(Wg @ n(x)) * (Wu @ n(x)), Wg/Wu rows of the fused [2I, H]. PART
    (Plan.oproj_merge): x is round(x + part). NWE: see mv_tiles."""
    tl.static_assert(not PART or (BK >= H), "PART: whole-row tiles only")
    tl.static_assert(not PART or (T == 1) or FT, "PART: T = 1, or the FMA path")
    w = w_gu + layer.to(tl.int64) * (2 * FF * H)
    if (T == 1) & (BK >= H):
        return mv_tiles(w, w + FF * H, n0, n1, x, mlp_norm + layer * H, eps, act, mlp_norm, sy,
                        H, FF, BN, BK, True, True, False, E_GATEUP, NS, NW, USE_PTX, part, PART,
                        NWE=NWE)
    if FT:
        return mv_tiles_t(w, w + FF * H, n0, n1, x, mlp_norm + layer * H, eps, act, mlp_norm,
                          sy, H, FF, T, TP2, BN, BK, True, True, False, E_GATEUP, NS, NW,
                          USE_PTX, part, PART)
    return mv_stream(w, w + FF * H, n0, n1, x, mlp_norm + layer * H, eps, act, mlp_norm, act,
                     act, act, act, 0, 1.0, 0, sy, H, FF, T, TP, BN, BK, True, True, False,
                     E_GATEUP, False, 1, IEEE, RED, NS, NW, USE_PTX)



@triton.jit(noinline=NOINLINE)
def eh_run(n0, n1, pos, nrows, x, hidden, hist, state, embed, w_eh, enorm, hnorm, eps, sy,
           H: tl.constexpr, T: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
           NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr):
    """MTP_EH (plan.mtp): x[T + r, n0:n1] = W_eh[n0:n1] @ [enorm(embed(tok_r)); hnorm(h_r)] for
    the step's `nrows` positions r (at pos + r): tok_r, the token after position pos + r, is
    the last `emitted` tokens' r-th in the history (SAMPLE appended the kept drafts and the new
    token), h_r the hidden state SAMPLE kept at pos + r; past the emitted ones (rows never
    kept) token 0 and zeros stand in. In a fill (state[M_FILL], plan(fill=True)) the rows are
    T positions of a prompt: tok_r = hist[pos + r + 1] (the tokens by position), those before
    state[FILL_END] kept. Whole-row tiles (BK >= 2H), the weights requested before the wait;
    each row's input built per tile (two L2 loads: a run has a tile or two)."""
    K: tl.constexpr = 2 * H
    cols = tl.arange(0, BK)
    cm = cols < K
    first = cols < H
    hm = cm & (cols >= H)
    ecols = tl.where(first, cols, 0)
    hcols = tl.where(first, 0, cols - H)
    nw = tl.where(first, tl.load(enorm + ecols, mask=first, other=0.0),
                  tl.load(hnorm + hcols, mask=hm, other=0.0))
    ok = 0
    e = 0
    nh = 0
    base = 0  # the history index of the token after row 0's position
    fill = tl.load(state + W_M_FILL)
    for c in tl.range(0, (n1 - n0 + BN - 1) // BN, num_stages=NS):
        rows, rm, w, wu = _row_tile(w_eh, w_eh, n0, n1, c, K, BN, cols, cm, False)
        if c == 0:
            ok = wait_args(sy, NW, USE_PTX)
            nh = tl.load(state + W_N_HIST, cache_modifier=".cg")
            if fill != 0:
                e = tl.minimum(tl.load(state + W_FILL_END) - pos, T)
                base = pos + 1
            else:
                e = tl.load(state + W_POS, cache_modifier=".cg") - pos
                base = nh - e
        if (ok == 1) & (sy[9] == 1):
            for r in range(0, nrows):
                i = base + r
                tok = tl.load(hist + tl.maximum(tl.minimum(i, nh - 1), 0),
                              cache_modifier=".cg")
                tok = tl.where((i >= 0) & (i < nh), tok, 0).to(tl.int64)
                xe = tl.load(embed + tok * H + ecols, mask=first, other=0.0).to(tl.float32)
                lim = tl.where(r < e, K, 0)  # (a row SAMPLE did not keep: zeros)
                xh = tl.load(hidden + (pos + r).to(tl.int64) * H + hcols,
                             mask=hm & (cols < lim), other=0.0,
                             cache_modifier=".cg").to(tl.float32)
                re = 1.0 / tl.sqrt(tl.sum(xe * xe, axis=0) / H + eps)
                rh = 1.0 / tl.sqrt(tl.sum(xh * xh, axis=0) / H + eps)
                xin = tl.where(first, xe * re, xh * rh) * nw
                y = tl.sum(w.to(tl.float32) * xin[None, :], axis=1)  # [BN]
                tl.store(x + (T + r) * H + rows, y.to(x.dtype.element_ty), mask=rm)
    return ok
