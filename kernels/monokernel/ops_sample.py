"""The end of a step (Triton device functions): LM head with per-tile partials, then SAMPLE.

LMHEAD tiles write fp32 logits and, per (position, tile): the max and its first token
(greedy), or the Gumbel-max (temperature), plus max/sum-exp of l / t (sampling). For top-k /
top-p each run keeps its top `C` candidates as sorted int64 keys (bitonic merge: the running
top-C sorted descending, the next C sorted ascending, elementwise max, sort). SAMPLE (one
program) picks each position's token by sampling.py's rules, accepts drafts while they equal
the choice, writes tokens to the host-visible ring and the progress counter (system-scope
release), checks stop ids / max tokens / cancel / KV capacity, and writes the next step's
input tokens, position and embedding rows. Knows nothing about layers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import weights as W
from .ops_mv import E_LM, NOINLINE, mv_stream

MIN_KEY = tl.constexpr(-(1 << 63))
BIG = tl.constexpr(2147483647)
(POS, N_OUT, DONE, MODE, TOP_K, MAX_NEW, N_STOP, N_DRAFT, SEED_LO, SEED_HI, CAPACITY, STEPS) = (
    tl.constexpr(v) for v in (W.POS, W.N_OUT, W.DONE, W.MODE, W.TOP_K, W.MAX_NEW, W.N_STOP,
                              W.N_DRAFT, W.SEED_LO, W.SEED_HI, W.CAPACITY, W.STEPS))
GREEDY = tl.constexpr(W.GREEDY)
TEMPERATURE = tl.constexpr(W.TEMPERATURE)
FILTERED = tl.constexpr(W.FILTERED)
HOST_HDR = tl.constexpr(W.HOST_HDR)
H_PROGRESS = tl.constexpr(W.H_PROGRESS)
H_DONE = tl.constexpr(W.H_DONE)
ERR_CAP = tl.constexpr(W.ERR_CAP)
DONE_STOP = tl.constexpr(W.DONE_STOP)
DONE_LENGTH = tl.constexpr(W.DONE_LENGTH)
DONE_CANCEL = tl.constexpr(W.DONE_CANCEL)
DONE_CAPACITY = tl.constexpr(W.DONE_CAPACITY)
DONE_ERROR = tl.constexpr(W.DONE_ERROR)


@triton.jit
def make_key(v, idx):
    b = v.to(tl.int32, bitcast=True)
    o = tl.where(b >= 0, b, b ^ 0x7FFFFFFF)
    return (o.to(tl.int64) << 32) | (0x7FFFFFFF - idx).to(tl.int64)


@triton.jit
def split_key(k):
    o = (k >> 32).to(tl.int32)
    v = tl.where(o >= 0, o, o ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)
    return v, 0x7FFFFFFF - (k & 0xFFFFFFFF).to(tl.int32)


@triton.jit
def _seed(state):
    lo = tl.load(state + SEED_LO).to(tl.int64) & 0xFFFFFFFF
    return (tl.load(state + SEED_HI).to(tl.int64) << 32) | lo


@triton.jit(noinline=NOINLINE)
def lm_run(n0, n1, slot, x, logits, lm_val, lm_idx, lm_stat, cand, lm_head, norm_f, state,
           fparams, eps, sy, H: tl.constexpr, V: tl.constexpr, T: tl.constexpr, TP: tl.constexpr,
           BN: tl.constexpr, BK: tl.constexpr, NT: tl.constexpr, NCL: tl.constexpr,
           C: tl.constexpr, SAMPLING: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr,
           NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr):
    """LM-head rows [n0, n1) (waits for the last DOWN itself, after requesting weights)."""
    if SAMPLING:
        t = tl.arange(0, TP)
        mode = tl.load(state + MODE)
        temp = tl.load(fparams)
        inv_t = 1.0 / tl.where(temp > 0, temp, 1.0)
        key = _seed(state) + tl.load(state + POS, cache_modifier=".cg") + t  # [TP] int64
    else:
        mode = 0
        inv_t = 1.0
        key = tl.zeros((TP,), tl.int64)
    ok = mv_stream(lm_head, lm_head, n0, n1, x, norm_f, eps, logits, norm_f, lm_val, lm_idx,
                   lm_stat, mode, inv_t, key, sy, H, V, T, TP, BN, BK, True, False, False, E_LM,
                   SAMPLING, NT, IEEE, RED, NS, NW, USE_PTX)
    if SAMPLING:  # noqa: SIM102
        # this run's top C per position, from the logits it just wrote
        if (mode == FILTERED) & (ok == 1) & (sy[9] == 1):
            tl.debug_barrier()
            c = tl.arange(0, C)
            for tt in range(0, T):
                top = tl.full((C,), MIN_KEY, tl.int64)
                for c0 in range(n0, n1, C):
                    cols = c0 + c
                    cm = cols < n1
                    val = tl.load(logits + tt * V + cols, mask=cm, other=0.0,
                                  cache_modifier=".cg")
                    nxt = tl.sort(tl.where(cm, make_key(val, cols), MIN_KEY))  # ascending
                    top = tl.sort(tl.maximum(top, nxt), descending=True)
                tl.store(cand + (tt * NCL + slot) * C + c, top)
    return ok


@triton.jit
def _argmax_tiles(lm_val, lm_idx, t, NT: tl.constexpr):
    bv = float("-inf")
    bi = BIG
    for i0 in range(0, NT, 1024):
        i = i0 + tl.arange(0, 1024)
        m = i < NT
        v = tl.load(lm_val + t * NT + i, mask=m, other=float("-inf"), cache_modifier=".cg")
        ix = tl.load(lm_idx + t * NT + i, mask=m, other=BIG, cache_modifier=".cg")
        cur = tl.max(v, axis=0)
        ci = tl.min(tl.where(v == cur, ix, BIG), axis=0)
        bi = tl.where(cur > bv, ci, bi)  # strict: earlier tiles win ties
        bv = tl.maximum(bv, cur)
    return bi


@triton.jit
def _z_all(lm_stat, t, T: tl.constexpr, NT: tl.constexpr):
    mmax = float("-inf")
    for i0 in range(0, NT, 1024):
        i = i0 + tl.arange(0, 1024)
        mx = tl.load(lm_stat + t * NT + i, mask=i < NT, other=float("-inf"), cache_modifier=".cg")
        mmax = tl.maximum(mmax, tl.max(mx, axis=0))
    z = 0.0
    for i0 in range(0, NT, 1024):
        i = i0 + tl.arange(0, 1024)
        m = i < NT
        mx = tl.load(lm_stat + t * NT + i, mask=m, other=0.0, cache_modifier=".cg")
        se = tl.load(lm_stat + (T + t) * NT + i, mask=m, other=0.0, cache_modifier=".cg")
        z += tl.sum(tl.where(m, se * tl.exp(mx - mmax), 0.0), axis=0)
    return z


@triton.jit
def _choose_filtered(cand, lm_stat, state, fparams, t, key, V: tl.constexpr, T: tl.constexpr,
                     NT: tl.constexpr, NCL: tl.constexpr, C: tl.constexpr):
    """(token, cap exceeded) at position t: merge the runs' candidates, top-k, top-p, Gumbel."""
    c = tl.arange(0, C)
    top = tl.full((C,), MIN_KEY, tl.int64)
    for s in range(0, NCL):
        base = cand + (t * NCL + s) * C
        if tl.load(base, cache_modifier=".cg") > tl.min(top, axis=0):
            nxt = tl.load(base + (C - 1 - c), cache_modifier=".cg")  # ascending
            top = tl.sort(tl.maximum(top, nxt), descending=True)
    val, ids = split_key(top)
    valid = top != MIN_KEY
    s = val / tl.load(fparams)
    e = tl.where(valid, tl.exp(s - tl.max(tl.where(valid, s, float("-inf")), axis=0)), 0.0)
    top_k = tl.load(state + TOP_K)
    top_p = tl.load(fparams + 1)
    kept = valid
    over = 0
    if top_k > 0:
        kth = tl.sum(tl.where(c == top_k - 1, s, 0.0), axis=0)
        kept = valid & (s >= kth)
        z = tl.sum(tl.where(kept, e, 0.0), axis=0)
        last = tl.sum(tl.where((c == C - 1) & kept, 1, 0), axis=0)
        over = ((last > 0) & (V > C)).to(tl.int32)
    else:
        z = _z_all(lm_stat, t, T, NT)
    if top_p < 1.0:
        ek = tl.where(kept, e, 0.0)
        before = tl.cumsum(ek, axis=0) - ek
        kept = kept & (before < top_p * z)
        if (top_k == 0) & (V > C) & (tl.sum(ek, axis=0) < top_p * z):
            over = 1
    u = tl.rand(key, tl.where(valid, ids, 0))
    score = tl.where(kept, s - tl.log(-tl.log(u)), float("-inf"))
    best = tl.max(score, axis=0)
    first = tl.min(tl.where(score == best, c, C), axis=0)
    return tl.sum(tl.where(c == first, ids, 0), axis=0), over


@triton.jit(noinline=NOINLINE)
def sample_run(seq, cancel, state, fparams, tokens, stop_ids, drafts, host, x, embed, lm_val,
               lm_idx, lm_stat, cand, err, H: tl.constexpr, V: tl.constexpr, T: tl.constexpr,
               TP2: tl.constexpr, NT: tl.constexpr, NCL: tl.constexpr, C: tl.constexpr,
               SAMPLING: tl.constexpr):
    pos = tl.load(state + POS, cache_modifier=".cg")
    n_out = tl.load(state + N_OUT, cache_modifier=".cg")
    max_new = tl.load(state + MAX_NEW)
    n_stop = tl.load(state + N_STOP)
    if SAMPLING:
        mode = tl.load(state + MODE)
        seed = _seed(state)
    done = 0
    emitted = 0
    last = tl.load(tokens, cache_modifier=".cg")
    t = 0
    go = 1
    while go == 1:
        over = 0
        if SAMPLING:
            if mode == FILTERED:
                a, over = _choose_filtered(cand, lm_stat, state, fparams, t, seed + pos + t, V,
                                           T, NT, NCL, C)
            else:
                a = _argmax_tiles(lm_val, lm_idx, t, NT)
        else:
            a = _argmax_tiles(lm_val, lm_idx, t, NT)
        if over != 0:
            done = DONE_ERROR
            if tl.atomic_cas(err, 0, ERR_CAP) == 0:
                tl.store(err + 1, -1)
                tl.store(err + 2, seq)
            go = 0
        else:
            tl.store(host + HOST_HDR + n_out, a)
            n_out += 1
            emitted += 1
            last = a
            hits = 0
            for s0 in range(0, n_stop, 128):
                i = s0 + tl.arange(0, 128)
                ids = tl.load(stop_ids + i, mask=i < n_stop, other=-1)
                hits += tl.sum((ids == a).to(tl.int32), axis=0)
            if hits > 0:
                done = DONE_STOP
            elif n_out >= max_new:
                done = DONE_LENGTH
            nxt_in = tl.load(tokens + t + 1, mask=t + 1 < T, other=-1, cache_modifier=".cg")
            go = ((done == 0) & (t + 1 < T) & (nxt_in == a)).to(tl.int32)
            t += 1
    npos = pos + emitted
    if done == 0:
        if cancel != 0:
            done = DONE_CANCEL
        elif npos + T > tl.load(state + CAPACITY):
            done = DONE_CAPACITY
    tl.debug_barrier()  # every read of tokens and the ring stores are behind us
    tl.atomic_xchg(host + H_PROGRESS, n_out, sem="release", scope="sys")
    if done != 0:
        tl.atomic_xchg(host + H_DONE, done, sem="release", scope="sys")
    tl.store(state + POS, npos)
    tl.store(state + N_OUT, n_out)
    tl.store(state + DONE, done)
    tl.store(state + STEPS, tl.load(state + STEPS) + 1)
    j = tl.arange(0, TP2)
    di = n_out - 1 + j
    dm = (j >= 1) & (j < T) & (di < tl.load(state + N_DRAFT))
    nxt = tl.where(j == 0, last, tl.load(drafts + di, mask=dm, other=0))
    nxt = tl.where(dm | (j == 0), nxt, last)
    tl.store(tokens + j, nxt, mask=j < T)
    for tt in range(0, T):  # the next step's x: embedding rows of its input tokens
        tok = tl.sum(tl.where(j == tt, nxt, 0), axis=0).to(tl.int64)
        for h0 in range(0, H, 1024):
            hc = h0 + tl.arange(0, 1024)
            row = tl.load(embed + tok * H + hc, mask=hc < H)
            tl.store(x + tt * H + hc, row, mask=hc < H)
