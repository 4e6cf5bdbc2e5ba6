"""Attention op of the monokernel (Triton device functions): split-KV partials, merged by the
last split of each kv head.

ATTN tile = (kv head, split): rows are (query head of the group, position t), padded to a
power of two >= 16 for tl.dot (as kernels/attention.py pads the group). Keys [lo, pos + T) are
cut into `S` chunks of whole BT blocks, computed from pos on the device (as attention.py), so
splits past the live range exit at once. Before waiting for QKV a tile requests what does not
depend on it: the first block of its chunk's cached keys and values (positions < pos, written
in earlier steps) and, when T = 1, the new position's RoPE row. After the wait it applies the
Qwen3 q/k RMSNorm and RoPE (rotate_half, pairs (i, i + hd/2)) to q and the new keys, runs an
online softmax (exp2, log2 units) over the new positions of its chunk straight from registers
(rounded to the cache dtype, as the reference reads them back) and then over the cached
blocks, with the causal and sliding-window masks of each query position, and appends those new
K/V to the cache for later steps. It stores its partials and takes a ticket (acq_rel atomic)
on its kv head's counter: the split that takes the last ticket merges the live splits'
partials of the group's heads into `attn` and resets the counter, so no separate merge op (and
no grid-wide wait) follows; or, at T = 1 (Plan.oproj_merge; a T > 1 kernel's one-position
steps, and with Plan.narrow_merge its narrow ones), O-proj's tiles of the kv head merge them
themselves (oproj_merge_run: one ticket, one merging program and one release fewer on a
layer's critical path). Knows nothing about weights other than Wo there.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .ops_mv import NOINLINE, _row_tile
from .sync import ERR_LL, ll_missing, ll_seen, ll_value, mark, record_error, stamp, wait_args


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
def _norm_rope(ptr, rows_ok, d, dr, sgn, nw, nwr, c, s, eps, HD: tl.constexpr,
               QK_NORM: tl.constexpr):
    """rows [R] of pointers to a head's first element -> normed, rotated [R, HD] fp32. nw /
    nwr: the norm weights at d and at the rotated d (loaded before the wait)."""
    a = tl.load(ptr[:, None] + d[None, :], mask=rows_ok[:, None], other=0.0, cache_modifier=".cg")
    ar = tl.load(ptr[:, None] + dr[None, :], mask=rows_ok[:, None], other=0.0,
                 cache_modifier=".cg")
    return _norm_rope_v(a, ar, sgn, nw, nwr, c, s, eps, HD, QK_NORM)


@triton.jit
def _norm_rope_v(a, ar, sgn, nw, nwr, c, s, eps, HD: tl.constexpr, QK_NORM: tl.constexpr):
    """_norm_rope of values: a [R, HD] fp32 and ar, the same at the rotated d."""
    if QK_NORM:
        rs = 1.0 / tl.sqrt(tl.sum(a * a, axis=1) / HD + eps)
        a = a * rs[:, None] * nw[None, :]
        ar = ar * rs[:, None] * nwr[None, :]
    return a * c + sgn[None, :] * ar * s


@triton.jit
def _qkv_words(qll, kvh, d, dr, tag, sy, NH: tl.constexpr, NKV: tl.constexpr,
               HD: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, USE_PTX: tl.constexpr):
    """T = 1 with Plan.qkv_ll: kv head kvh's q rows [GP, HD] (heads past G masked), k and v
    [1, HD], fp32, read from QKV's tagged words (sync.ll_pack), each also at the rotate_half
    partner dr for RoPE: every thread polls its words (volatile loads, all issued at once) until
    each carries `tag`, bounded by sy's cap and given up when another program has recorded an
    error; no counter, no acquire (the words are their own flags; the cached keys were ordered
    by the step's start). On expiry records ERR_LL (target the tag, seen the oldest tag left).
    Returns (ok, q, q at dr, k, k at dr, v); the wait's end goes to the trace as a counter
    wait's does."""
    hh = tl.arange(0, GP)
    hm = (hh < G)[:, None] & (d >= 0)[None, :]  # [GP, HD]
    km = (d >= 0)[None, :]  # [1, HD]
    pq = qll + (kvh * G + hh)[:, None] * HD
    pk = qll + (NH + kvh) * HD + d[None, :] * 0
    pv = qll + (NH + NKV + kvh) * HD + d[None, :]
    wq, wqr, wk, wkr, wv = _qkv_load(pq, pk, pv, d, dr, hm)
    miss = _qkv_missing(wq, wqr, wk, wkr, wv, hm, tag, GP, HD)
    n = 0
    while (miss > 0) & (n < sy[3]):
        wq, wqr, wk, wkr, wv = _qkv_load(pq, pk, pv, d, dr, hm)
        miss = _qkv_missing(wq, wqr, wk, wkr, wv, hm, tag, GP, HD)
        n += 1
        if (n % 32) == 0:  # noqa: SIM102 (another program failed: give up)
            if tl.load(sy[2], volatile=True) != 0:
                n = sy[3]
    ok = (miss == 0).to(tl.int32)
    if ok == 0:
        seen = tl.minimum(tl.minimum(ll_seen(wq, hm), ll_seen(wk, km)), ll_seen(wv, km))
        record_error(sy[2], ERR_LL, sy[4], sy[5], sy[6], tag, seen, sy[7], sy[8])
    stamp(sy[10] + 1, sy[11], USE_PTX)
    return ok, ll_value(wq), ll_value(wqr), ll_value(wk), ll_value(wkr), ll_value(wv)


@triton.jit
def _qkv_load(pq, pk, pv, d, dr, hm):
    """One poll of _qkv_words: the q rows at d and dr (hm: the group's heads), k at d and dr, v
    (volatile loads, issued together)."""
    return (tl.load(pq + d[None, :], mask=hm, other=0, volatile=True),
            tl.load(pq + dr[None, :], mask=hm, other=0, volatile=True),
            tl.load(pk + d[None, :], volatile=True), tl.load(pk + dr[None, :], volatile=True),
            tl.load(pv, volatile=True))


@triton.jit
def _qkv_missing(wq, wqr, wk, wkr, wv, hm, tag, GP: tl.constexpr, HD: tl.constexpr):
    """Whether any of the words lacks `tag`: one [GP, HD] flag tensor (k and v broadcast over
    the rows), one reduction (one CTA barrier a poll)."""
    kv = (ll_missing(wk, tag) | ll_missing(wkr, tag) | ll_missing(wv, tag))  # [1, HD]
    bad = ((ll_missing(wq, tag) | ll_missing(wqr, tag)) & hm) | kv
    return tl.max(tl.reshape(bad.to(tl.int32), (GP * HD,)), axis=0)


@triton.jit
def _rows_of_group(qc, rv, M: tl.constexpr, GP: tl.constexpr, HD: tl.constexpr):
    """[GP, HD] -> the [M, HD] query rows of a T = 1 tile (row r: head r; rows past the group,
    rv false, zero)."""
    if M == GP:
        r = qc
    else:
        r = tl.reshape(tl.broadcast_to(qc[None, :, :], (M // GP, GP, HD)), (M, HD))
    return tl.where(rv[:, None], r, 0.0)


@triton.jit
def _qk_norm_weights(q_norm, k_norm, layer, d, dr, HD: tl.constexpr, QK_NORM: tl.constexpr):
    """The layer's q and k RMSNorm weights at d and at the rotate_half partner dr (zeros
    without QK_NORM): constant, so requested before the wait, not after a reduction."""
    qw = d * 0.0
    qwr = qw
    kw = qw
    kwr = qw
    if QK_NORM:
        qw = tl.load(q_norm + layer * HD + d)
        qwr = tl.load(q_norm + layer * HD + dr)
        kw = tl.load(k_norm + layer * HD + d)
        kwr = tl.load(k_norm + layer * HD + dr)
    return qw, qwr, kw, kwr


@triton.jit
def _online(s, vals, ok, m_i, l_i, acc, IEEE: tl.constexpr, dt: tl.constexpr):
    """One block of the online softmax: scores s [M, B] (log2 units), mask ok, values [B, HD];
    B == 1 (the one new key of a T = 1 step) without tl.dot."""
    s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if vals.shape[0] == 1:
        acc = acc * alpha[:, None] + p * vals.to(tl.float32)
    else:
        acc = acc * alpha[:, None] + _dot(p, vals, IEEE, dt)
    return m_new, l_i, acc


@triton.jit
def _merge_round(h0, live, att_acc, att_ml, NH: tl.constexpr, HD: tl.constexpr,
                 T: tl.constexpr, TP2: tl.constexpr, S: tl.constexpr, SP: tl.constexpr,
                 G: tl.constexpr, GP: tl.constexpr, TL: tl.constexpr):
    """The G heads [h0, h0 + G)'s `live` split partials of T positions merged, fp32 [GP, TP2,
    HD] (rows past G, positions past T: zero), in one round of loads: each split's running max
    and denominator, then its accumulator, weighted by exp2(max - the heads' max)."""
    t = tl.arange(0, TP2)
    d = tl.arange(0, HD)
    hh = tl.arange(0, GP)
    sp = tl.arange(0, SP)
    sm = (hh < G)[:, None, None] & (sp < live)[None, :, None] & (t < T)[None, None, :]
    slot = ((h0 + hh[:, None, None]) * S + sp[None, :, None]) * TL + t[None, None, :]
    m = tl.load(att_ml + slot, mask=sm, other=float("-inf"), cache_modifier=".cg")
    l_s = tl.load(att_ml + NH * S * TL + slot, mask=sm, other=0.0, cache_modifier=".cg")
    a = tl.load(att_acc + slot[:, :, :, None] * HD + d[None, None, None, :],
                mask=sm[:, :, :, None], other=0.0, cache_modifier=".cg")  # [GP, SP, TP2, HD]
    mx = tl.max(m, axis=1)  # [GP, TP2]
    m_safe = tl.where(mx == float("-inf"), 0.0, mx)
    wgt = tl.where(sm, tl.exp2(m - m_safe[:, None, :]), 0.0)
    den = tl.sum(l_s * wgt, axis=1)  # [GP, TP2]
    acc = tl.sum(a * wgt[:, :, :, None], axis=1)  # [GP, TP2, HD]
    return acc / tl.where(den > 0, den, 1.0)[:, :, None]


@triton.jit(noinline=NOINLINE)
def _merge(h0, live, att_acc, att_ml, attn, NH: tl.constexpr, HD: tl.constexpr,
           T: tl.constexpr, TP2: tl.constexpr, S: tl.constexpr, SP: tl.constexpr,
           G: tl.constexpr, GP: tl.constexpr, MH: tl.constexpr = False, TL: tl.constexpr = 1,
           MR: tl.constexpr = 8192):
    """attn[t, h] for the G heads [h0, h0 + G) = the `live` splits' partials merged. When small
    enough (GP x SP x TP2 x HD <= MR, Tiling.merge_elems) every head's partials are loaded at
    once: one round of L2 latency for the whole group; else, with MH (Tiling.merge_heads), head
    by head with every split's partials of TC positions at once (SP x TC x HD <= MR: one round
    per head and TC positions); else head by head, split by split (a dependent round per
    split)."""
    t = tl.arange(0, TP2)
    tv = t < T
    d = tl.arange(0, HD)
    TC: tl.constexpr = min(TP2, max(1, MR // (SP * HD)))  # (powers of two: SP, HD, TP2)
    if GP * SP * TP2 * HD <= MR:
        hh = tl.arange(0, GP)
        out = _merge_round(h0, live, att_acc, att_ml, NH, HD, T, TP2, S, SP, G, GP, TL)
        om = (hh < G)[:, None, None] & tv[None, :, None]
        tl.store(attn + t[None, :, None] * (NH * HD) + (h0 + hh[:, None, None]) * HD
                 + d[None, None, :], out.to(attn.dtype.element_ty), mask=om)
    elif MH and (SP * HD <= MR):
        sp = tl.arange(0, SP)
        tc = tl.arange(0, TC)
        for h in range(h0, h0 + G):
            for c0 in tl.static_range(0, TP2, TC):
                tt = c0 + tc
                sm = (sp < live)[:, None] & (tt < T)[None, :]  # [SP, TC]
                slot = (h * S + sp[:, None]) * TL + tt[None, :]
                m = tl.load(att_ml + slot, mask=sm, other=float("-inf"), cache_modifier=".cg")
                l_s = tl.load(att_ml + NH * S * TL + slot, mask=sm, other=0.0,
                              cache_modifier=".cg")
                a = tl.load(att_acc + slot[:, :, None] * HD + d[None, None, :],
                            mask=sm[:, :, None], other=0.0, cache_modifier=".cg")  # [SP, TC, HD]
                mx = tl.max(m, axis=0)  # [TC]
                m_safe = tl.where(mx == float("-inf"), 0.0, mx)
                wgt = tl.where(sm, tl.exp2(m - m_safe[None, :]), 0.0)
                den = tl.sum(l_s * wgt, axis=0)  # [TC]
                acc = tl.sum(a * wgt[:, :, None], axis=0)  # [TC, HD]
                out = acc / tl.where(den > 0, den, 1.0)[:, None]
                tl.store(attn + tt[:, None] * (NH * HD) + h * HD + d[None, :],
                         out.to(attn.dtype.element_ty), mask=(tt < T)[:, None])
    else:
        for h in range(h0, h0 + G):
            m_run = tl.full((TP2,), float("-inf"), tl.float32)
            den = tl.zeros((TP2,), tl.float32)
            acc = tl.zeros((TP2, HD), tl.float32)
            for s in range(0, live):
                slot = (h * S + s) * TL + t
                m = tl.load(att_ml + slot, mask=tv, other=float("-inf"), cache_modifier=".cg")
                l_s = tl.load(att_ml + NH * S * TL + slot, mask=tv, other=0.0,
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


@triton.jit(noinline=NOINLINE)
def attn_run(layer, t0, t1, pos, qkv, att_acc, att_ml, attn, tickets, q_norm, k_norm, cos,
             sin, k_cache, v_cache, cap, window, eps, qk_scale, sy, NH: tl.constexpr,
             NKV: tl.constexpr, HD: tl.constexpr, T: tl.constexpr, S: tl.constexpr,
             SP: tl.constexpr, BT: tl.constexpr, M: tl.constexpr, TP2: tl.constexpr,
             TN: tl.constexpr, QK_NORM: tl.constexpr, HAS_WINDOW: tl.constexpr,
             IEEE: tl.constexpr, NSA: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr,
             FOLD: tl.constexpr = False, MH: tl.constexpr = False, SR: tl.constexpr = 1,
             TL: tl.constexpr = 1, BT0: tl.constexpr = 0, MR: tl.constexpr = 8192,
             OM: tl.constexpr = False, qll=None, tag=0, LL: tl.constexpr = False):
    """Tiles [t0, t1) of a layer's attention (see the module text); waits for QKV itself
    (`sy`: sync.wait_args) after requesting the first cached block, at its first tile with keys
    (tiles past the live range or the step's splits have nothing to wait for). `tickets`: this
    layer's
    per-kv-head counters. FOLD (T = 1, Tiling.attn_fold): the new key and value join the
    cached ones (patched into the first block's registers, or read back from the cache in a
    later block) instead of a separate online-softmax step. S: tiles per kv head (the stride of
    the partials); SR (Plan.split_ratio): the step attends in S // SR splits, tiles s < S // SR
    of each kv head, the others have nothing to do; SP covers S // SR. TL: the partials'
    positions per split in memory (the kernel's T; a one-position step of a T > 1 kernel keeps
    its layout). BT0 (Tiling.attn_block_t0; 0: BT): keys of a chunk's first block, requested
    before the wait and held in registers across it; the loop after the wait walks the rest in
    blocks of BT. MR: see _merge. OM (Plan.oproj_merge, T = 1): no ticket and no merge, O-proj
    merges the partials (oproj_merge_run). LL (Plan.qkv_ll, T = 1): q, k and v polled from
    QKV's tagged words at `qll` (_qkv_words: every tile with keys polls its own) instead of the
    wait for QKV's counter. Returns the wait's verdict."""
    tl.static_assert(not LL or (T == 1), "qkv_ll: T = 1")
    SE: tl.constexpr = S // SR
    B0: tl.constexpr = BT if BT0 == 0 else BT0
    G: tl.constexpr = NH // NKV
    GP: tl.constexpr = triton.next_power_of_2(G)
    HALF: tl.constexpr = HD // 2
    NQKV: tl.constexpr = (NH + 2 * NKV) * HD
    dt = k_cache.dtype.element_ty
    r = tl.arange(0, M)
    g, t = r // TP2, r % TP2  # query row = (group head, position)
    rv = (g < G) & (t < T)
    d = tl.arange(0, HD)
    dr = (d + HALF) % HD
    sgn = tl.where(d < HALF, -1.0, 1.0)
    lo, n, chunk = live_range(pos, window, T, SE, BT, HAS_WINDOW)
    live = tl.cdiv(n - lo, chunk)
    qp = pos + t  # [M] query positions
    j = tl.arange(0, TN)  # new positions pos + j (T > 1: rows padded to >= 16 for tl.dot)
    kp = pos + j
    jv = j < T
    lk = k_cache + layer.to(tl.int64) * (NKV * cap * HD)
    lv = v_cache + layer.to(tl.int64) * (NKV * cap * HD)
    qw, qwr, kw, kwr = _qk_norm_weights(q_norm, k_norm, layer, d, dr, HD, QK_NORM)
    ok = 1
    first = 1
    for tile in range(t0, t1):
        kvh = tile // S
        split = tile % S
        start = lo + split * chunk
        end = tl.minimum(start + chunk, n)
        if SR > 1:  # a tile past the step's splits: nothing to do
            end = tl.where(split < SE, end, start)
        cached = tl.minimum(end, pos)  # keys [start, cached) are in the cache already
        # independent of QKV, requested before the wait: the chunk's first cached block
        kk = start + tl.arange(0, B0)
        km = kk < cached
        offs = kvh * cap * HD + kk[:, None] * HD + d[None, :]
        kb = tl.load(lk + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
        vb = tl.load(lv + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
        if TN == 1:  # one RoPE row: cheap to hold across the wait
            ck = tl.load(cos + kp[:, None] * HD + d[None, :], mask=jv[:, None], other=0.0)
            sk = tl.load(sin + kp[:, None] * HD + d[None, :], mask=jv[:, None], other=0.0)
        if LL:  # q, k, v from their tagged words (zeros: a tile without keys polls nothing)
            a = tl.zeros((GP, HD), tl.float32)
            ar = a
            ka = tl.zeros((1, HD), tl.float32)
            kar = ka
            va = ka
            if start < end:
                okt, a, ar, ka, kar, va = _qkv_words(qll, kvh, d, dr, tag, sy, NH, NKV, HD, G,
                                                     GP, USE_PTX)
                ok = ok & okt
        elif (first == 1) & (start < end):  # (a run of empty tiles only: done without a wait)
            ok = wait_args(sy, NW, USE_PTX)
            first = 0
        if (ok == 1) & (sy[9] == 1) & (start < end):
            heads = kvh * G + g
            if LL:
                q = _rows_of_group(_norm_rope_v(a, ar, sgn, qw, qwr, ck, sk, eps, HD, QK_NORM),
                                   rv, M, GP, HD) * qk_scale
                k = _norm_rope_v(ka, kar, sgn, kw, kwr, ck, sk, eps, HD, QK_NORM).to(dt)
                v = va.to(dt)
            else:
                if TN == 1:  # one position: its RoPE row (requested before the wait) serves q
                    cq = ck
                    sq = sk
                else:
                    cq = tl.load(cos + qp[:, None] * HD + d[None, :], mask=rv[:, None],
                                 other=0.0)
                    sq = tl.load(sin + qp[:, None] * HD + d[None, :], mask=rv[:, None],
                                 other=0.0)
                    ck = tl.load(cos + kp[:, None] * HD + d[None, :], mask=jv[:, None],
                                 other=0.0)
                    sk = tl.load(sin + kp[:, None] * HD + d[None, :], mask=jv[:, None],
                                 other=0.0)
                q = _norm_rope(qkv + t * NQKV + heads * HD, rv, d, dr, sgn, qw, qwr, cq, sq, eps,
                               HD, QK_NORM) * qk_scale  # [M, HD]
                k = _norm_rope(qkv + j * NQKV + NH * HD + kvh * HD, jv, d, dr, sgn, kw, kwr, ck,
                               sk, eps, HD, QK_NORM).to(dt)  # [TN, HD]
                vrow = qkv + j * NQKV + (NH + NKV) * HD + kvh * HD
                v = tl.load(vrow[:, None] + d[None, :], mask=jv[:, None], other=0.0,
                            cache_modifier=".cg").to(dt)
            dep = tl.sum(tl.sum(q, axis=1), axis=0) + tl.sum(tl.sum(v.to(tl.float32), axis=1),
                                                             axis=0)
            mark(sy, 2, dep, USE_PTX)  # timeline: q, k, v ready
            mine = jv & (kp >= start) & (kp < end)  # new positions inside this chunk
            dst = kvh * cap * HD + kp[:, None] * HD + d[None, :]
            tl.store(lk + dst, k, mask=mine[:, None])  # for later steps
            tl.store(lv + dst, v, mask=mine[:, None])
            m_i = tl.full((M,), float("-inf"), tl.float32)
            l_i = tl.zeros((M,), tl.float32)
            acc = tl.zeros((M, HD), tl.float32)
            upto = cached  # the loop below reads keys [start + B0, upto) from the cache
            if FOLD and (TN == 1):  # the new key in its block: one online step per block
                newrow = (kk == pos) & (kk < end)  # [BT] (only in the split that holds pos)
                kb = tl.where(newrow[:, None], k, kb)
                vb = tl.where(newrow[:, None], v, vb)
                km = km | newrow
                upto = tl.minimum(end, pos + 1)  # a later block reads it back (stored above)
                tl.debug_barrier()
            else:  # the new keys first (their registers are free before the cached blocks)
                okn = mine[None, :] & (kp[None, :] <= qp[:, None])  # causal
                if HAS_WINDOW:
                    okn = okn & (kp[None, :] > qp[:, None] - window)
                if TN == 1:
                    sn = tl.sum(q * k.to(tl.float32), axis=1)[:, None]  # [M, 1]
                else:
                    sn = _dot(q, tl.trans(k), IEEE, dt)  # [M, TN]
                m_i, l_i, acc = _online(sn, v, okn, m_i, l_i, acc, IEEE, dt)
            # cached keys precede every query position: only the window can mask them (the
            # new key folded in at T = 1 is the query's own position: in the window too)
            okb = km[None, :]
            if HAS_WINDOW:
                okb = okb & (kk[None, :] > qp[:, None] - window)
            if OM:  # timeline (marks 4-6 are the ticket's otherwise): the first block here
                mark(sy, 4, tl.sum(tl.sum(kb.to(tl.float32), axis=1), axis=0)
                     + tl.sum(tl.sum(vb.to(tl.float32), axis=1), axis=0), USE_PTX)
            s0 = _dot(q, tl.trans(kb), IEEE, dt)
            if OM:  # timeline: its scores
                mark(sy, 5, tl.sum(tl.sum(s0, axis=1), axis=0), USE_PTX)
            m_i, l_i, acc = _online(s0, vb, okb, m_i, l_i, acc, IEEE, dt)
            if OM:  # timeline: its online step (P V) done
                mark(sy, 6, tl.sum(tl.sum(acc, axis=1), axis=0), USE_PTX)
            for b0 in tl.range(start + B0, upto, BT, num_stages=NSA):  # the rest: cp.async
                kk2 = b0 + tl.arange(0, BT)
                km2 = kk2 < upto
                offs2 = kvh * cap * HD + kk2[:, None] * HD + d[None, :]
                kb2 = tl.load(lk + offs2, mask=km2[:, None], other=0.0, cache_modifier=".cg")
                vb2 = tl.load(lv + offs2, mask=km2[:, None], other=0.0, cache_modifier=".cg")
                ok2 = km2[None, :]
                if HAS_WINDOW:
                    ok2 = ok2 & (kk2[None, :] > qp[:, None] - window)
                m_i, l_i, acc = _online(_dot(q, tl.trans(kb2), IEEE, dt), vb2, ok2, m_i, l_i,
                                        acc, IEEE, dt)
            mark(sy, 3, tl.sum(tl.sum(acc, axis=1), axis=0), USE_PTX)  # timeline: softmax done
            slot = (heads * S + split) * TL + t  # [M]
            tl.store(att_acc + slot[:, None] * HD + d[None, :], acc, mask=rv[:, None])
            tl.store(att_ml + slot, m_i, mask=rv)
            tl.store(att_ml + NH * S * TL + slot, l_i, mask=rv)
            if not OM:
                tl.debug_barrier()  # every thread's partials are stored before the ticket
                ticket = tl.atomic_add(tickets + kvh, 1, sem="acq_rel", scope="gpu")
                mark(sy, 4, ticket.to(tl.float32), USE_PTX)  # timeline: ticket taken
                if ticket == live - 1:  # the last live split of this kv head: merge its heads
                    tl.atomic_xchg(tickets + kvh, 0, sem="relaxed", scope="gpu")
                    _merge(kvh * G, live, att_acc, att_ml, attn, NH, HD, T, TP2, S, SP, G, GP,
                           MH, TL, MR)
                    mark(sy, 5, 1.0, USE_PTX)  # timeline: merged
    return ok


@triton.jit(noinline=NOINLINE)
def attn_run_one(layer, t0, t1, pos, qkv, att_acc, att_ml, attn, q_norm, k_norm, cos, sin,
                 k_cache, v_cache, cap, window, eps, qk_scale, sy, NH: tl.constexpr,
                 NKV: tl.constexpr, HD: tl.constexpr, S: tl.constexpr, BT: tl.constexpr,
                 M: tl.constexpr, QK_NORM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 IEEE: tl.constexpr, NSA: tl.constexpr, NW: tl.constexpr,
                 USE_PTX: tl.constexpr, TL: tl.constexpr = 1, qll=None, tag=0,
                 LL: tl.constexpr = False, NEWLAST: tl.constexpr = False):
    """attn_run for one position (a T = 1 step, or a T > 1 kernel's one-position step) where
    O-proj merges the splits (Plan.oproj_merge) and the new key folds in (Tiling.attn_fold),
    with the wait for QKV inside the key-block loop's first iteration
    (Tiling.attn_wait_loop): the pipeliner's prologue requests the chunk's first NSA - 1
    blocks of cached keys and values (cp.async) before it, so a chunk of more than one block
    (head_dim 128 past 32 x 32 keys: 64-key chunks at ctx 1024 on Qwen3-1.7B) reads no cached
    block after the wait. Same splits, same partials as attn_run; the new key and value,
    computed after the wait, are patched into the block that holds their position (that
    block's cp.async masks the position out). LL (Plan.qkv_ll, T = 1 kernels): q, k and v
    polled from QKV's tagged words (_qkv_words, each tile with keys its own) instead of the
    wait for QKV's counter. NEWLAST (Tiling.attn_new_last): the new key is not patched into
    its block (which then goes from the cp.async buffer straight into the dots, without a
    round trip through registers) but takes an online step of its own after the blocks."""
    G: tl.constexpr = NH // NKV
    GP: tl.constexpr = triton.next_power_of_2(G)
    HALF: tl.constexpr = HD // 2
    dt = k_cache.dtype.element_ty
    r = tl.arange(0, M)
    g = r  # query rows: the group's heads (padded to M for tl.dot)
    rv = g < G
    d = tl.arange(0, HD)
    dr = (d + HALF) % HD
    sgn = tl.where(d < HALF, -1.0, 1.0)
    lo, n, chunk = live_range(pos, window, 1, S, BT, HAS_WINDOW)
    lk = k_cache + layer.to(tl.int64) * (NKV * cap * HD)
    lv = v_cache + layer.to(tl.int64) * (NKV * cap * HD)
    qw, qwr, kw, kwr = _qk_norm_weights(q_norm, k_norm, layer, d, dr, HD, QK_NORM)
    one = tl.arange(0, 1)
    ck = tl.load(cos + pos * HD + one[:, None] * 0 + d[None, :])  # the position's RoPE row
    sk = tl.load(sin + pos * HD + one[:, None] * 0 + d[None, :])
    ok = 1
    first = 1
    for tile in range(t0, t1):
        kvh = tile // S
        split = tile % S
        start = lo + split * chunk
        end = tl.minimum(start + chunk, n)
        cached = tl.minimum(end, pos)  # keys [start, cached) are in the cache already
        heads = kvh * G + g
        q = tl.zeros((M, HD), tl.float32)
        k = tl.zeros((1, HD), dt)
        v = tl.zeros((1, HD), dt)
        m_i = tl.full((M,), float("-inf"), tl.float32)
        l_i = tl.zeros((M,), tl.float32)
        acc = tl.zeros((M, HD), tl.float32)
        # blocks [start, end) (0 for a tile past the live range: no wait, nothing stored)
        for ib in tl.range(0, tl.cdiv(end - start, BT), num_stages=NSA):
            kk = start + ib * BT + tl.arange(0, BT)
            km = kk < cached
            offs = kvh * cap * HD + kk[:, None] * HD + d[None, :]
            kb = tl.load(lk + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
            vb = tl.load(lv + offs, mask=km[:, None], other=0.0, cache_modifier=".cg")
            if ib == 0:
                if LL:
                    okt, a, ar, ka, kar, va = _qkv_words(qll, kvh, d, dr, tag, sy, NH, NKV, HD,
                                                         G, GP, USE_PTX)
                    ok = ok & okt
                elif first == 1:
                    ok = wait_args(sy, NW, USE_PTX)
                    first = 0
                if (ok == 1) & (sy[9] == 1):
                    if LL:
                        q = _rows_of_group(_norm_rope_v(a, ar, sgn, qw, qwr, ck, sk, eps, HD,
                                                        QK_NORM), rv, M, GP, HD) * qk_scale
                        k = _norm_rope_v(ka, kar, sgn, kw, kwr, ck, sk, eps, HD,
                                         QK_NORM).to(dt)
                        v = va.to(dt)
                    else:
                        q = _norm_rope(qkv + heads * HD, rv, d, dr, sgn, qw, qwr, ck, sk, eps,
                                       HD, QK_NORM) * qk_scale  # [M, HD]
                        k = _norm_rope(qkv + NH * HD + kvh * HD + one, one >= 0, d, dr, sgn, kw,
                                       kwr, ck, sk, eps, HD, QK_NORM).to(dt)  # [1, HD]
                        v = tl.load(qkv + (NH + NKV) * HD + kvh * HD + one[:, None] * 0
                                    + d[None, :], cache_modifier=".cg").to(dt)
                    dep = tl.sum(tl.sum(q, axis=1), axis=0) + tl.sum(tl.sum(
                        v.to(tl.float32), axis=1), axis=0)
                    mark(sy, 2, dep, USE_PTX)  # timeline: q, k, v ready
                    kpos = pos + one[:, None] * 0 + d[None, :] * 0  # [1, HD]
                    mm = (kpos >= start) & (kpos < end)  # the new position is in this chunk
                    dst = kvh * cap * HD + kpos * HD + d[None, :]
                    tl.store(lk + dst, k, mask=mm)  # for later steps
                    tl.store(lv + dst, v, mask=mm)
            if (ok == 1) & (sy[9] == 1):
                if NEWLAST:  # the blocks straight from shared memory into the dots
                    okb = km[None, :]
                else:  # the new key patched in from registers
                    newrow = (kk == pos) & (kk < end)
                    kb = tl.where(newrow[:, None], k, kb)
                    vb = tl.where(newrow[:, None], v, vb)
                    okb = (km | newrow)[None, :]
                if HAS_WINDOW:
                    okb = okb & (kk[None, :] > pos - window)
                m_i, l_i, acc = _online(_dot(q, tl.trans(kb), IEEE, dt), vb, okb, m_i, l_i,
                                        acc, IEEE, dt)
        if NEWLAST:  # noqa: SIM102 (constexpr, then runtime)
            if (ok == 1) & (sy[9] == 1) & (start <= pos) & (pos < end):  # the new key's split
                # one online step of its own, from registers (the query's own position: in
                # the window, never masked: the mask `sn == sn` keeps every row)
                sn = tl.sum(q * k.to(tl.float32), axis=1)[:, None]  # [M, 1]
                m_i, l_i, acc = _online(sn, v, sn == sn, m_i, l_i, acc, IEEE, dt)
        if (ok == 1) & (sy[9] == 1) & (start < end):
            mark(sy, 3, tl.sum(tl.sum(acc, axis=1), axis=0), USE_PTX)  # timeline: softmax done
            slot = (heads * S + split) * TL
            tl.store(att_acc + slot[:, None] * HD + d[None, :], acc, mask=rv[:, None])
            tl.store(att_ml + slot, m_i, mask=rv)
            tl.store(att_ml + NH * S * TL + slot, l_i, mask=rv)
    return ok


@triton.jit(noinline=NOINLINE)
def oproj_merge_run(layer, n0, n1, k0, pos, window, att_acc, att_ml, attn, part, w_o, b_o, sy,
                    H: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, HD: tl.constexpr,
                    S: tl.constexpr, SP: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr,
                    BK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr,
                    NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr,
                    TL: tl.constexpr = 1, T: tl.constexpr = 1, TP2: tl.constexpr = 1,
                    SR: tl.constexpr = 1):
    """O-proj that merges attention (Plan.oproj_merge: a T = 1 step, or with T > 1 positions
    the narrow steps of Plan.narrow_merge): rows [n0, n1) of kv head k's slice (numbered
    k * H + row), columns [k0, k0 + G x HD) of Wo. Its weight tiles stream through the
    pipeliner as mv_tiles' do, requested before the wait for ATTN; after it the head group's
    live split partials of the T positions are merged in one round of loads (the plan keeps
    GP x SP x TP2 x HD within ops_attn._merge's one round), rounded to attn's type (the value
    attention stores, written to `attn` by the run that starts at row 0: the VM and diff.py
    read it), and each tile's W @ attn[t] (+ bias, kv head 0) is added into part[t, rows] by
    fp32 atomics. BK = GP x HD; TL: the partials' positions per split in memory (attn_run);
    S // SR: the step's splits, SP covering them; BT: the step's key blocks."""
    G: tl.constexpr = NH // NKV
    GP: tl.constexpr = triton.next_power_of_2(G)
    Q: tl.constexpr = NH * HD
    tl.static_assert(GP * HD == BK, "oproj_merge_run: BK is the group's padded columns")
    kvh = k0 // (G * HD)
    m0 = n0 - kvh * H
    m1 = n1 - kvh * H
    lo, n, chunk = live_range(pos, window, T, S // SR, BT, HAS_WINDOW)
    live = tl.cdiv(n - lo, chunk)
    cols = tl.arange(0, BK)
    cm = cols < G * HD
    tt = tl.arange(0, TP2)
    w = w_o + layer.to(tl.int64) * (H * Q) + kvh * (G * HD)  # (k0: 16-byte loads known)
    tl.static_assert(T <= 2, "oproj_merge_run: one position, or the two of a narrow step")
    xin = tl.zeros((BK,), tl.float32)  # position 0's merged heads, and position 1's (T = 2)
    xin1 = xin
    ok = 0
    for c in tl.range(0, (m1 - m0 + BN - 1) // BN, num_stages=NS):
        rows, rm, wt, _ = _row_tile(w, w, m0, m1, c, Q, BN, cols, cm, False)
        if c == 0:
            ok = wait_args(sy, NW, USE_PTX)
            hh = tl.arange(0, GP)
            d = tl.arange(0, HD)
            out = _merge_round(kvh * G, live, att_acc, att_ml, NH, HD, T, TP2, S, SP, G, GP, TL)
            heads = tl.where(m0 == 0, G, 0)  # (the run from row 0 writes attn)
            if T == 1:
                out = tl.reshape(out, (GP, HD)).to(attn.dtype.element_ty)
                tl.store(attn + (kvh * G + hh[:, None]) * HD + d[None, :], out,
                         mask=(hh < heads)[:, None] & (d < HD)[None, :])
                xin = tl.reshape(out.to(tl.float32), (BK,))
            else:
                out = out.to(attn.dtype.element_ty)  # [GP, TP2, HD]
                tl.store(attn + tt[None, :, None] * Q + (kvh * G + hh[:, None, None]) * HD
                         + d[None, None, :], out,
                         mask=(hh < heads)[:, None, None] & (tt < T)[None, :, None])
                of = out.to(tl.float32)
                xin = tl.reshape(tl.sum(tl.where((tt == 0)[None, :, None], of, 0.0), axis=1),
                                 (BK,))
                xin1 = tl.reshape(tl.sum(tl.where((tt == 1)[None, :, None], of, 0.0), axis=1),
                                  (BK,))
            mark(sy, 2, tl.sum(xin, axis=0), USE_PTX)  # timeline: merged
        if (ok == 1) & (sy[9] == 1):
            y = tl.sum(wt.to(tl.float32) * xin[None, :], axis=1)  # [BN]
            y1 = y
            if T == 2:  # the second position's, as the first's (one [BN, BK] product each)
                y1 = tl.sum(wt.to(tl.float32) * xin1[None, :], axis=1)
            if HAS_BIAS:
                bias = tl.load(b_o + layer * H + rows, mask=rows < tl.where(kvh == 0, m1, 0),
                               other=0.0)
                y += bias
                y1 += bias
            tl.atomic_add(part + rows, y, mask=rm, sem="relaxed", scope="gpu")
            if T == 2:
                tl.atomic_add(part + H + rows, y1, mask=rm, sem="relaxed", scope="gpu")
            if c == 0:  # timeline: the first tile done, then the last
                mark(sy, 3, tl.sum(y, axis=0), USE_PTX)
            mark(sy, 4, tl.sum(y, axis=0), USE_PTX)
    return ok
