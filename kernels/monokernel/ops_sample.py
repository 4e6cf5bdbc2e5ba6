"""The end of a step (Triton device functions): LM head with per-tile partials, then SAMPLE.

LMHEAD tiles write fp32 logits and, per (position, tile): the max and its first token (greedy), or
the Gumbel-max (temperature), plus max/sum-exp of l / t (sampling). For top-k / top-p each run keeps
its top `C` candidates as sorted int64 keys (bitonic merge: the running top-C sorted descending, the
next C sorted ascending, elementwise max, sort). SAMPLE (one program) picks each position's token by
sampling.py's rules, accepts drafts while they equal the choice (a greedy T-step without a
constraint: every position at once, `greedy_accept`), writes tokens to the host-visible ring and the
progress counter (system-scope release), checks stop ids / max tokens / cancel / KV capacity, and
writes the next step's input tokens, position and embedding rows. Knows nothing about layers. With
state[KEEP_HIDDEN] (MTP drafters) it also copies the residual stream x of each position whose K/V
the step keeps (the final hidden state before the final norm: the LM head applies the norm) to the
KV cache's hidden rows at those positions (`keep_hidden`: H elements per kept position), before the
next step's embedding rows overwrite x.

Structured outputs (state[C_ON] set at run time, so no other compiled variant): after its
tiles, an LM-head run masks its logits by the automaton state of each position (the bitmask
row of state[C_STATE + t]) and redoes its tiles' partials from the masked logits
(`lm_constrain`), before its top-C candidates (-inf: never a candidate). SAMPLE advances the
state past each chosen token on the device (`_c_next`: the bitmask bit, the state's exception
tokens searched 1024 per load, else its default next state); a state that allows only EOS writes
C_EOS to the ring and ends the sequence (DONE_STOP), a dead one (-1) is an error (ERR_DEAD);
then it walks the next step's input tokens (drafts) for the next step's per-position states.
Without a constraint none of this runs: the tile epilogue's argmax is the only one.

The n-gram drafter on the device (state[D_ON] set by weights.start_drafting, so no other compiled
variant; the T = 1 kernel keeps only the history): SAMPLE appends each emitted token to `hist` (the
sequence's tokens, one store each). In a kernel of T > 1, after the step's tokens are decided,
`draft_count` counts the step's drafts (state[D_GUESSED] of them were the drafter's; the accepted
ones: emitted - 1, at most that) and updates an integer EWMA of the tokens a step keeps past its
first (Q16); below state[D_FLOOR] (the host policy's break-even for T) the launch ends with
DONE_PAUSE. Otherwise `draft_next` drafts the next step from `hist`: NgramDrafter's rule
(`ngram_find`: every candidate end position of a block of 1024 history tokens compared at once, the
match lengths counted as masks, one load per matched length while any candidate still matches,
blocks from the most recent back until a full-length match), up to min(state[D_K], T - 1) tokens,
trimmed as the host's propose_drafts trims (stop ids; with a constraint the walk cuts rejected
tokens and drafts forced ones, c_forced, and stores the next step's per-position states in place of
c_states); it writes drafts[n_out + i] and state[N_DRAFT], which the next-input code below already
reads, and state[D_CONF]: the match behind the proposal (`match_span`: the n-gram, extended back
while the tokens before both occurrences agree, one load of each side) or the forced drafts if more,
by which a switching kernel picks the next step's width (one position, narrow, T:
weights.D_MATCH_MIN / _WIDE). Cost per step: a history of L tokens takes ceil(L / 1024) block loads
at most (fewer: a full-length match stops it), plus one per extra matched length in a block with
live candidates, a few scalar loads, one load of the proposal and of the stop ids; with a
constraint, ~4 dependent loads per drafted position."""

from __future__ import annotations

import triton
import triton.language as tl

from . import weights as W
from .ops_mv import E_LM, NOINLINE, mv_stream
from .sync import wait_args

MIN_KEY = tl.constexpr(-(1 << 63))
BIG = tl.constexpr(2147483647)
(POS, N_OUT, DONE, MODE, TOP_K, MAX_NEW, N_STOP, N_DRAFT, SEED_LO, SEED_HI, CAPACITY, STEPS) = (
    tl.constexpr(v) for v in (W.POS, W.N_OUT, W.DONE, W.MODE, W.TOP_K, W.MAX_NEW, W.N_STOP,
                              W.N_DRAFT, W.SEED_LO, W.SEED_HI, W.CAPACITY, W.STEPS))
C_ON, C_WORDS, C_EOS, C_START, C_STATE = (tl.constexpr(v) for v in (
    W.C_ON, W.C_WORDS, W.C_EOS, W.C_START, W.C_STATE))
(D_ON, N_HIST, HIST_CAP, D_NMIN, D_NMAX, D_K, D_GUESSED, D_EWMA, D_ALPHA, D_FLOOR, D_PROBE,
 D_STEPS, D_DRAFTED, D_ACCEPTED) = (tl.constexpr(v) for v in (
    W.D_ON, W.N_HIST, W.HIST_CAP, W.D_NMIN, W.D_NMAX, W.D_K, W.D_GUESSED, W.D_EWMA, W.D_ALPHA,
    W.D_FLOOR, W.D_PROBE, W.D_STEPS, W.D_DRAFTED, W.D_ACCEPTED))
DONE_PAUSE = tl.constexpr(W.DONE_PAUSE)
STEP_ONE = tl.constexpr(W.STEP_ONE)
D_WAIT, D_EVERY, D_EVERY0, D_EVERY_MAX = (tl.constexpr(v) for v in (
    W.D_WAIT, W.D_EVERY, W.D_EVERY0, W.D_EVERY_MAX))
D_SWITCH = tl.constexpr(W.D_SWITCH)
D_WIDE, D_NEED = tl.constexpr(W.D_WIDE), tl.constexpr(W.D_NEED)
D_CONF, D_MATCH_MIN, D_MATCH_WIDE, D_BY_WIDTH = (tl.constexpr(v) for v in (
    W.D_CONF, W.D_MATCH_MIN, W.D_MATCH_WIDE, W.D_BY_WIDTH))
MATCH_CAP = tl.constexpr(W.MATCH_CAP)
KEEP_HIDDEN = tl.constexpr(W.KEEP_HIDDEN)
M_ON, M_FLOOR, M_USED, M_STEPS, M_ACCEPTED, FILL_END = (tl.constexpr(v) for v in (
    W.M_ON, W.M_FLOOR, W.M_USED, W.M_STEPS, W.M_ACCEPTED, W.FILL_END))
M_KV, M_POS, M_W, M_LAZY = (tl.constexpr(v) for v in (W.M_KV, W.M_POS, W.M_W, W.M_LAZY))
Q16F = tl.constexpr(float(W.Q16))
HBLK = tl.constexpr(1024)  # history tokens per load of the n-gram lookup
ERR_DEAD = tl.constexpr(W.ERR_DEAD)
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
def lm_constrain(n0, n1, logits, lm_val, lm_idx, lm_stat, state, c_bitmask, mode, inv_t,
                 V: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, BN: tl.constexpr,
                 NT: tl.constexpr, SAMPLING: tl.constexpr, TS: tl.constexpr):
    """A constraint is active: logits [t, n0:n1] (just written by this run) -> -inf where the
    automaton state before position t does not allow the token, then the per-tile partials of
    the run's tiles again, as the LM epilogue computes them (ops_mv._epilogue), from the masked
    logits. A tile with nothing allowed: max -inf, its first token, exp-sum 0. Blocks of RB
    rows (NB tiles) at once: a run of up to RB rows is one round trip to L2, not one per tile."""
    RB: tl.constexpr = BN * max(1, 1024 // (BN * TP))  # rows per block
    NB: tl.constexpr = RB // BN
    tl.debug_barrier()  # the run's logits, stored by other threads, are visible
    t = tl.arange(0, TP)
    tv = t < T
    if SAMPLING:  # (the Philox keys of lm_run: noinline functions take scalars only)
        key = _seed(state) + tl.load(state + POS, cache_modifier=".cg") + t  # [TP] int64
    cs = tl.load(state + C_STATE + t, mask=tv, other=-1, cache_modifier=".cg")  # [TP]
    words = tl.load(state + C_WORDS)
    lim = tl.where(cs >= 0, tl.minimum(words * 32, V), 0)  # ids the row can allow
    row = tl.maximum(cs, 0).to(tl.int64) * words
    for r0 in range(n0, n1, RB):
        rows = r0 + tl.arange(0, RB)
        m2 = (rows < n1)[:, None] & tv[None, :]
        lp = logits + t[None, :] * V + rows[:, None]
        y = tl.load(lp, mask=m2, other=0.0, cache_modifier=".cg")  # [RB, TP]
        bits = tl.load(c_bitmask + row[None, :] + (rows >> 5)[:, None],
                       mask=m2 & (rows[:, None] < lim[None, :]), other=0)
        ok = ((bits >> (rows & 31)[:, None]) & 1) != 0
        y = tl.where(ok, y, float("-inf"))
        tl.store(lp, y, mask=m2)
        v = tl.reshape(tl.where(m2, y, float("-inf")), (NB, BN, TP))
        tile = r0 // BN + tl.arange(0, NB)  # [NB]
        tm = (tile * BN < n1)[:, None] & tv[None, :]  # [NB, TP]: the run's tiles
        to = t[None, :] * NT + tile[:, None]
        if SAMPLING:  # noqa: SIM102 (constexpr, then runtime)
            if mode != GREEDY:
                sc = v * inv_t
                mx = tl.max(sc, axis=1)  # [NB, TP]
                tl.store(lm_stat + to, mx, mask=tm)
                base = tl.where(mx > float("-inf"), mx, 0.0)
                tl.store(lm_stat + TS * NT + to, tl.sum(tl.exp(sc - base[:, None, :]), axis=1),
                         mask=tm)
                if mode == TEMPERATURE:
                    u = tl.rand(key[None, :], rows[:, None])  # [RB, TP]
                    v = sc - tl.reshape(tl.log(-tl.log(u)), (NB, BN, TP))
        pm = tl.max(v, axis=1)  # [NB, TP]
        r3 = tl.reshape(rows, (NB, BN))[:, :, None]
        pi = tl.min(tl.where(v == pm[:, None, :], r3, BIG), axis=1)
        tl.store(lm_val + to, pm, mask=tm)
        tl.store(lm_idx + to, pi, mask=tm)


@triton.jit(noinline=NOINLINE)
def lm_run(n0, n1, slot, x, logits, lm_val, lm_idx, lm_stat, cand, lm_head, norm_f, state,
           fparams, c_bitmask, eps, sy, H: tl.constexpr, V: tl.constexpr, T: tl.constexpr,
           TP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NT: tl.constexpr,
           NCL: tl.constexpr, C: tl.constexpr, SAMPLING: tl.constexpr, IEEE: tl.constexpr,
           RED: tl.constexpr, NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr,
           TS: tl.constexpr):
    """LM-head rows [n0, n1) (waits for the last DOWN itself, after requesting weights); with
    a constraint, masked (lm_constrain). TS: the kernel's T, lm_stat's layout [2, TS, NT] (a
    one-position step of a T > 1 kernel: T = 1, TS = the kernel's T, as SAMPLE reads it)."""
    con = tl.load(state + C_ON)  # (loaded before the weight stream: its latency hides there)
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
                   lm_stat, lm_stat + TS * NT, mode, inv_t, key, sy, H, V, T, TP, BN, BK, True,
                   False, False, E_LM, SAMPLING, NT, IEEE, RED, NS, NW, USE_PTX)
    if (ok == 1) & (sy[9] == 1) & (con != 0):
        lm_constrain(n0, n1, logits, lm_val, lm_idx, lm_stat, state, c_bitmask, mode, inv_t, V,
                     T, TP, BN, NT, SAMPLING, TS)
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
                    live = cm & (val > float("-inf"))  # -inf: masked by a constraint
                    nxt = tl.sort(tl.where(live, make_key(val, cols), MIN_KEY))  # ascending
                    top = tl.sort(tl.maximum(top, nxt), descending=True)
                tl.store(cand + (tt * NCL + slot) * C + c, top)
    return ok


@triton.jit(noinline=NOINLINE)
def mtp_head_run(n0, n1, pos, x, logits, lm_val, lm_idx, m_stat, lm_head, mtp_norm, state, eps,
                 sy, H: tl.constexpr, V: tl.constexpr, T: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr, NT: tl.constexpr, IEEE: tl.constexpr, RED: tl.constexpr,
                 NS: tl.constexpr, NW: tl.constexpr, USE_PTX: tl.constexpr):
    """The MTP module's head (LMHEAD of layer L, plan.mtp), vocabulary rows [n0, n1): logits of
    the module's row at the step's last kept position (x[T + emitted - 1], its own norm) to row
    T of logits / lm_val / lm_idx, each tile's max and sum of exp(l - max) to m_stat (the
    draft's probability). The row is known after the wait (SAMPLE advanced the position), so
    the wait comes first and the weight stream's own wait is one that has passed already.
    Skipped where MTP_SAMPLE would not use the draft (the module off, the sequence ended, or
    the next step drafting already)."""
    ok = wait_args(sy, NW, USE_PTX)
    # only where MTP_SAMPLE may use the draft: the module on, the sequence going on, the next
    # step left one position by SAMPLE (no usable draft of the lookup's)
    need = ((tl.load(state + M_ON) != 0) & (tl.load(state + DONE, cache_modifier=".cg") == 0)
            & (tl.load(state + STEP_ONE, cache_modifier=".cg") == 1))
    if (ok == 1) & (sy[9] == 1) & need:
        e = tl.maximum(tl.load(state + POS, cache_modifier=".cg") - pos, 1)
        done = (sy[0], 0, sy[2], sy[3], sy[4], sy[5], sy[6], sy[7], sy[8], sy[9], sy[10],
                sy[11])
        ok = mv_stream(lm_head, lm_head, n0, n1, x + (T + e - 1) * H, mtp_norm, eps,
                       logits + T * V, mtp_norm, lm_val + T * NT, lm_idx + T * NT, m_stat,
                       m_stat + NT, FILTERED, 1.0, tl.zeros((1,), tl.int64), done, H, V, 1, 1,
                       BN, BK, True, False, False, E_LM, True, NT, IEEE, RED, NS, NW, USE_PTX)
    return ok


@triton.jit(noinline=NOINLINE)
def mtp_sample_run(state, tokens, x, embed, lm_val, lm_idx, m_stat, H: tl.constexpr,
                   T: tl.constexpr, NT: tl.constexpr, TB: tl.constexpr):
    """MTP_SAMPLE (plan.mtp): where SAMPLE left the next step one position (the lookup had no
    usable draft; state[STEP_ONE] 1) and the sequence goes on, the MTP head's draft (the
    largest of its tile maxima, row T) with probability 1 / sum of its tiles' exp-sums at the
    global max, if at least state[M_FLOOR] (Q16), becomes the next step's second input: that
    step runs narrow (TB positions, the rest padded with the last token), state[M_USED] 1."""
    if TB > 1:  # noqa: SIM102 (constexpr, then runtime)
        if ((tl.load(state + M_ON) != 0) & (tl.load(state + DONE, cache_modifier=".cg") == 0)
                & (tl.load(state + STEP_ONE, cache_modifier=".cg") == 1)):
            z = _z_all(m_stat, 0, 1, NT)
            if Q16F / z >= tl.load(state + M_FLOOR).to(tl.float32):
                d = _argmax_tiles(lm_val, lm_idx, T, NT)
                last = tl.load(tokens, cache_modifier=".cg")
                j = tl.arange(0, TB)
                nxt = tl.where(j == 1, d, last)
                tl.store(tokens + j, nxt, mask=j >= 1)
                for tt in range(1, TB):
                    tok = tl.sum(tl.where(j == tt, nxt, 0), axis=0).to(tl.int64)
                    for h0 in tl.static_range(0, H, 1024):
                        hc = h0 + tl.arange(0, 1024)
                        row = tl.load(embed + tok * H + hc, mask=hc < H)
                        tl.store(x + tt * H + hc, row, mask=hc < H)
                tl.store(state + M_USED, 1)
                tl.store(state + STEP_ONE, 2)


@triton.jit
def fill_next(state, pos, T: tl.constexpr):
    """FILL_NEXT (plan(fill=True)): the next T positions; from state[FILL_END] on, done."""
    npos = pos + T
    tl.store(state + POS, npos)
    tl.store(state + STEPS, tl.load(state + STEPS) + 1)
    if npos >= tl.load(state + FILL_END):
        tl.store(state + DONE, 1)


@triton.jit
def _argmax_tiles(lm_val, lm_idx, t, NT: tl.constexpr):
    """The token of the largest of position t's NT tile maxima (the lowest id among equals).
    The chunks are unrolled and kept as a running per-lane best, reduced across threads once:
    every chunk's loads are issued before the first result is needed (one round of L2 latency,
    not one per chunk: ~10 rounds at a 152K vocabulary)."""
    B: tl.constexpr = 1024
    bv = tl.full((B,), float("-inf"), tl.float32)
    bi = tl.full((B,), BIG, tl.int32)
    for c in tl.static_range(0, (NT + B - 1) // B):
        i = c * B + tl.arange(0, B)
        m = i < NT
        v = tl.load(lm_val + t * NT + i, mask=m, other=float("-inf"), cache_modifier=".cg")
        ix = tl.load(lm_idx + t * NT + i, mask=m, other=BIG, cache_modifier=".cg")
        better = v > bv  # strict: at one lane the earlier chunk (lower ids) wins ties
        bi = tl.where(better, ix, bi)
        bv = tl.where(better, v, bv)
    cur = tl.max(bv, axis=0)
    return tl.min(tl.where(bv == cur, bi, BIG), axis=0)


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
    if top_k > 0:  # (a constraint may leave fewer than top_k valid: then all of them)
        kth = tl.sum(tl.where(c == top_k - 1, tl.where(valid, s, float("-inf")), 0.0), axis=0)
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
        full = tl.sum(tl.where((c == C - 1) & valid, 1, 0), axis=0)  # else: all are here
        if (top_k == 0) & (V > C) & (full > 0) & (tl.sum(ek, axis=0) < top_p * z):
            over = 1
    u = tl.rand(key, tl.where(valid, ids, 0))
    score = tl.where(kept, s - tl.log(-tl.log(u)), float("-inf"))
    best = tl.max(score, axis=0)
    first = tl.min(tl.where(score == best, c, C), axis=0)
    return tl.sum(tl.where(c == first, ids, 0), axis=0), over


@triton.jit
def _c_next(s, tok, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next, words):
    """The automaton state after token `tok` in state `s`: -1 when its bit is clear in the
    state's bitmask row (or s is -1), else the exception's next state when tok is among the
    state's exception tokens, else the state's default next state (what
    constraint_mask._advance_kernel computes). The row (sorted by token) is searched in blocks
    of 1024: a row of at most one block in one load; a longer one (string states keep up to a
    vocabulary of exceptions) by first loading every block's first token (up to 256 blocks per
    load: one load for any vocabulary below 262,144), then the one block that can hold tok: two
    dependent loads where a scan makes row / 1024 and a binary search log2(row)."""
    ok = (s >= 0) & (tok >= 0) & (tok < words * 32)
    sc = tl.maximum(s, 0)
    tc = tl.where(ok, tok, 0)
    word = tl.load(c_bitmask + sc.to(tl.int64) * words + (tc >> 5))
    lo = tl.load(c_exc_ptr + sc)
    end = tl.load(c_exc_ptr + sc + 1)
    dflt = tl.load(c_default + sc)
    ok = ok & (((word >> (tc & 31)) & 1) != 0)
    base = lo
    f = tl.arange(0, 256)
    while end - base > 1024:  # blocks [base + 1024 k, ...): the last one whose first token <= tc
        fi = base + f * 1024
        first = tl.load(c_exc_tokens + fi, mask=fi < end, other=2147483647)
        k = tl.sum((first <= tc).to(tl.int32), axis=0) - 1
        if k < 255:
            end = tl.minimum(end, base + tl.maximum(k, 0) * 1024 + 1024)
            base = base + tl.maximum(k, 0) * 1024
        else:  # beyond these 256 blocks: the next 256
            base = base + 255 * 1024
    i = base + tl.arange(0, 1024)
    e = tl.load(c_exc_tokens + i, mask=i < end, other=-1)
    at = tl.max(tl.where(e == tc, i, -1), axis=0)
    nxt = tl.where(at >= 0, tl.load(c_exc_next + tl.maximum(at, 0)), dflt)
    return tl.where(ok, nxt, -1)


@triton.jit(noinline=NOINLINE)
def c_step(s, tok, state, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next, c_done):
    """A constraint is active and `tok` was chosen in state `s`. Returns the next state n
    (>= 0), -1 (dead: tok is not allowed), or -2 - n when n allows only EOS (the output ends
    there); with C_START >= 0 (timing only) such an n restarts at C_START instead."""
    ns = _c_next(s, tok, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next,
                 tl.load(state + C_WORDS))
    out = ns
    if ns >= 0:  # noqa: SIM102
        if tl.load(c_done + ns).to(tl.int32) != 0:
            restart = tl.load(state + C_START)
            out = tl.where(restart >= 0, restart, -2 - ns)
    return out


@triton.jit(noinline=NOINLINE)
def c_states(s, tokens, state, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next,
             T: tl.constexpr):
    """The next step's per-position automaton states: s before position 0, then each of its
    input tokens (drafts, just stored to `tokens`) in turn walked from it."""
    tl.store(state + C_STATE, s)
    if T > 1:
        tl.debug_barrier()  # the tokens stored by other threads are visible
        words = tl.load(state + C_WORDS)
        for tt in range(1, T):
            tok = tl.load(tokens + tt)
            s = _c_next(s, tok, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next,
                        words)
            tl.store(state + C_STATE + tt, s)


@triton.jit
def ngram_find(hist, L, nmin, nmax, BLK: tl.constexpr):
    """NgramDrafter's lookup over hist[0:L]: (n, e), the longest suffix length n tried (from
    min(nmax, L - 1) down to nmin) that also ends at an earlier position e <= L - 2, and the
    latest such e; n = 0 (e = -1) when none reaches nmin. Every candidate end e of a block of
    BLK is compared at once: a run of matches t = 0, 1, ... (hist[e - t] == hist[L - 1 - t]),
    one load of the block per t while any candidate still matches (most die at t = 0: the last
    token). Blocks go from the most recent back and stop once an n-gram of the full length is
    found (the latest wins, so nothing earlier can beat it)."""
    nm = tl.minimum(nmax, L - 1)
    best_n = 0
    best_e = -1
    if nm >= nmin:
        last = tl.load(hist + L - 1)
        hi = L - 1  # this block's candidate ends: [hi - BLK, hi)
        go = 1
        while go == 1:
            e = hi - BLK + tl.arange(0, BLK)
            h0 = tl.load(hist + e, mask=e >= 0, other=-1)
            run = (e >= 0) & (h0 == last)
            m = run.to(tl.int32)  # the match length at e, up to nm
            live = tl.max(m, axis=0)
            t = 1
            while (live > 0) & (t < nm):
                ok = run & (e >= t)
                ht = tl.load(hist + e - t, mask=ok, other=-1)
                run = ok & (ht == tl.load(hist + L - 1 - t))
                r = run.to(tl.int32)
                m += r
                live = tl.max(r, axis=0)
                t += 1
            bm = tl.max(m, axis=0)
            if bm > best_n:  # strictly: a later block (seen first) wins a tie
                best_e = tl.max(tl.where(m == bm, e, -1), axis=0)
                best_n = bm
            hi -= BLK
            go = ((hi > 0) & (best_n < nm)).to(tl.int32)
    return best_n, best_e


@triton.jit
def match_span(hist, L, n, e, CAP: tl.constexpr):
    """The length of the match ngram_find found (n tokens ending at e and at L - 1), extended
    back while the tokens before both occurrences agree, by CAP at most (one load of each
    side); 0 when it found none."""
    span = n * 0
    if n > 0:
        i = tl.arange(0, CAP)
        a = e - n - i  # before the earlier occurrence; L - 1 - n - i before the suffix
        ok = a >= 0
        ha = tl.load(hist + a, mask=ok, other=-1)
        hb = tl.load(hist + L - 1 - n - i, mask=ok, other=-2)
        span = n + tl.min(tl.where(ha != hb, i, CAP), axis=0)
    return span


@triton.jit
def _positions(code, TB: tl.constexpr, T: tl.constexpr):
    """The positions of a step of width code `code` (weights.STEP_ONE: 0 T, 1 one, 2 TB)."""
    return tl.where(code == 1, 1, tl.where(code == 2, TB, T))


@triton.jit
def _is_stop(stop_ids, n_stop, tok):
    hits = 0
    for s0 in range(0, n_stop, 128):
        i = s0 + tl.arange(0, 128)
        ids = tl.load(stop_ids + i, mask=i < n_stop, other=-1)
        hits += tl.sum((ids == tok).to(tl.int32), axis=0)
    return hits > 0


@triton.jit(noinline=NOINLINE)
def draft_next(state, hist, drafts, stop_ids, n_hist, n_out, last, cs, con, c_bitmask,
               c_default, c_exc_ptr, c_exc_tokens, c_exc_next, c_done, c_forced,
               T: tl.constexpr, TP2: tl.constexpr, BLK: tl.constexpr):
    """The device n-gram drafter, after a step that emitted output indices up to n_out - 1
    (hist[0:n_hist] holds them): up to k = min(state[D_K], T - 1) drafts for the next step, as
    the host's propose_drafts(NgramDrafter) gives them: the lookup's proposal (ngram_find, the
    tokens after the match), cut after a stop id; with a constraint, walked from the automaton
    state `cs` (after `last`): cut before a token it rejects and after one that leaves only
    EOS, and where a state forces a token (the only one allowed) that token drafted instead,
    also past the proposal (up to k). Stores drafts[n_out + i], state[N_DRAFT] (n_out + their
    count) and state[D_GUESSED] (the proposal's among them); with a constraint also the next
    step's per-position automaton states (the padding walked too: c_states' job). Returns 1
    when it stored those."""
    nmin = tl.load(state + D_NMIN)
    k = tl.minimum(tl.load(state + D_K), T - 1)
    best_n, best_e = ngram_find(hist, n_hist, nmin, tl.load(state + D_NMAX), BLK)
    j = tl.arange(0, TP2)
    n_prop = tl.where((best_n >= nmin) & (k > 0), tl.minimum(k, n_hist - 1 - best_e), 0)
    props = tl.load(hist + best_e + 1 + j, mask=j < n_prop, other=0)
    n_stop = tl.load(state + N_STOP)
    walked = 0
    if con == 0:
        stop_at = TP2
        for s0 in range(0, n_stop, 128):
            i = s0 + tl.arange(0, 128)
            ids = tl.load(stop_ids + i, mask=i < n_stop, other=-1)
            hit = tl.sum((props[:, None] == ids[None, :]).to(tl.int32), axis=1)  # [TP2]
            stop_at = tl.minimum(stop_at, tl.min(tl.where((hit > 0) & (j < n_prop), j, TP2),
                                                 axis=0))
        count = tl.minimum(n_prop, stop_at + 1)
        guessed = count
        out = props
    else:
        walked = 1
        words = tl.load(state + C_WORDS)
        s = cs
        tl.store(state + C_STATE, s)
        out = props
        count = 0
        guessed = 0
        live = 1
        for i in range(0, T - 1):  # position i + 1: its input token, then the state after it
            forced = tl.where(s >= 0, tl.load(c_forced + tl.maximum(s, 0)), -1)
            p = tl.sum(tl.where(j == i, props, 0), axis=0)
            act = (live == 1) & (i < k)
            use_p = act & (guessed == i) & (i < n_prop) & ((forced == -1) | (forced == p))
            use_f = act & (use_p == 0) & (forced >= 0)
            take = use_p | use_f
            tok = tl.where(use_p, p, tl.where(use_f, forced, last))
            ns = _c_next(s, tok, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next,
                         words)
            ok = take & (ns >= 0)
            if take & (ns < 0):  # the constraint rejects it: the drafts end before it
                tok = last
                ns = _c_next(s, last, c_bitmask, c_default, c_exc_ptr, c_exc_tokens,
                             c_exc_next, words)
            fin = 0
            if ok:  # after a stop id or a state that allows only EOS: nothing more to draft
                fin = (_is_stop(stop_ids, n_stop, tok)
                       | (tl.load(c_done + ns).to(tl.int32) != 0)).to(tl.int32)
            live = (ok & (fin == 0)).to(tl.int32)
            count += ok.to(tl.int32)
            guessed += (ok & use_p).to(tl.int32)
            out = tl.where(j == i, tok, out)
            s = ns
            tl.store(state + C_STATE + i + 1, s)
    tl.store(drafts + n_out + j, out, mask=j < count)
    tl.store(state + N_DRAFT, n_out + count)
    tl.store(state + D_GUESSED, guessed)
    span = match_span(hist, n_hist, best_n, best_e, MATCH_CAP)
    tl.store(state + D_CONF, tl.maximum(tl.where(guessed > 0, span, 0), count - guessed))
    return walked


@triton.jit(noinline=NOINLINE)
def draft_count(state, emitted, done, width):
    """The device drafter's bookkeeping after a step (T > 1) that emitted `emitted` tokens:
    the counts (when the step carried the drafter's drafts), the running mean of accepted
    tokens per step (integer EWMA, Q16; a probe's first step replaces it) and the pause: a
    step that leaves the mean below state[D_FLOOR] ends the launch (DONE_PAUSE) unless the
    sequence ended anyway; when switching (D_SWITCH) it does not (the next steps run as one
    position, sample_run), and a probe doubles or resets the wait for the next one. `width`:
    the step's positions (a narrow step verifies width - 1 of the drafts). Returns the step's
    DONE code."""
    g = tl.minimum(tl.load(state + D_GUESSED), width - 1)
    acc = tl.maximum(emitted - 1, 0)
    if g > 0:
        tl.store(state + D_STEPS, tl.load(state + D_STEPS) + 1)
        tl.store(state + D_DRAFTED, tl.load(state + D_DRAFTED) + g)
        tl.store(state + D_ACCEPTED, tl.load(state + D_ACCEPTED) + tl.minimum(acc, g))
    x = acc.to(tl.int64) << 16
    ew = tl.load(state + D_EWMA).to(tl.int64)
    ew = tl.where(tl.load(state + D_PROBE) != 0, x,
                  ew + (((x - ew) * tl.load(state + D_ALPHA).to(tl.int64)) >> 16))
    tl.store(state + D_EWMA, ew.to(tl.int32))
    tl.store(state + D_GUESSED, 0)
    below = ew < tl.load(state + D_FLOOR).to(tl.int64)
    sw = tl.load(state + D_SWITCH)
    if (sw != 0) & (tl.load(state + D_PROBE) != 0):  # a probe: its wait doubles, or resets
        ev = tl.load(state + D_EVERY)
        tl.store(state + D_EVERY, tl.where(below, tl.minimum(2 * ev, tl.load(
            state + D_EVERY_MAX)), tl.load(state + D_EVERY0)))
    tl.store(state + D_PROBE, 0)
    pause = (done == 0) & below & (sw == 0)  # (switching: one-position steps instead)
    return tl.where(pause, DONE_PAUSE, done)


@triton.jit(noinline=NOINLINE)
def keep_hidden(x, hidden, pos, n, H: tl.constexpr):
    """The final hidden states (the residual stream after the last layer, before the final
    norm) of the step's first n positions, x[0:n], to hidden[pos:pos + n]."""
    for tt in range(0, n):
        dst = hidden + (pos + tt).to(tl.int64) * H
        for h0 in range(0, H, 1024):
            hc = h0 + tl.arange(0, 1024)
            row = tl.load(x + tt * H + hc, mask=hc < H, cache_modifier=".cg")
            tl.store(dst + hc, row, mask=hc < H)


@triton.jit(noinline=NOINLINE)
def greedy_accept(lm_val, lm_idx, tokens, stop_ids, host, hist, n_stop, n_out, max_new, n_hist,
                  h_cap, d_on, width, T: tl.constexpr, TP2: tl.constexpr, NT: tl.constexpr):
    """A greedy step without a constraint, every position at once (what sample_run's loop
    does one position after another): each position's token (the largest of its NT tile
    maxima, the lowest id among equals, as _argmax_tiles), then the emitted run: position t
    ends it at a stop id, at max_new, at the step's width, or where the next input (the
    draft) is not its token. Stores the run to the host ring (and `hist` when d_on); returns
    (emitted, done, last token). One round of loads for all positions' tile maxima, instead of
    a dependent round (and three reductions) per accepted draft."""
    CH: tl.constexpr = max(16, 2048 // TP2)  # tile maxima per position per load
    j = tl.arange(0, TP2)
    jm = j < width
    bv = tl.full((TP2, CH), float("-inf"), tl.float32)
    bi = tl.full((TP2, CH), BIG, tl.int32)
    for c in tl.static_range(0, (NT + CH - 1) // CH):
        i = c * CH + tl.arange(0, CH)
        m = jm[:, None] & (i < NT)[None, :]
        off = j[:, None] * NT + i[None, :]
        v = tl.load(lm_val + off, mask=m, other=float("-inf"), cache_modifier=".cg")
        ix = tl.load(lm_idx + off, mask=m, other=BIG, cache_modifier=".cg")
        better = v > bv  # strict: at one lane the earlier chunk (lower ids) wins ties
        bi = tl.where(better, ix, bi)
        bv = tl.where(better, v, bv)
    cur = tl.max(bv, axis=1)
    a = tl.min(tl.where(bv == cur[:, None], bi, BIG), axis=1)  # [TP2]
    nxt_in = tl.load(tokens + j + 1, mask=j + 1 < T, other=-1, cache_modifier=".cg")
    hit = tl.zeros((TP2,), tl.int32)
    for s0 in range(0, n_stop, 128):
        si = s0 + tl.arange(0, 128)
        ids = tl.load(stop_ids + si, mask=si < n_stop, other=-1)
        hit += tl.sum((a[:, None] == ids[None, :]).to(tl.int32), axis=1)
    ends = (hit > 0) | (n_out + j + 1 >= max_new) | (j + 1 >= width) | (nxt_in != a)
    emitted = tl.min(tl.where(ends, j, TP2), axis=0) + 1
    keep = j < emitted
    tl.store(host + HOST_HDR + n_out + j, a, mask=keep)
    tl.store(hist + n_hist + j, a, mask=keep & ((j * 0 + d_on) != 0) & (n_hist + j < h_cap))
    at_end = j == emitted - 1
    last = tl.sum(tl.where(at_end, a, 0), axis=0)
    stop = tl.sum(tl.where(at_end, hit, 0), axis=0) > 0
    done = tl.where(stop, DONE_STOP, tl.where(n_out + emitted >= max_new, DONE_LENGTH, 0))
    return emitted, done, last


@triton.jit(noinline=NOINLINE)
def sample_run(seq, cancel, one, state, fparams, tokens, stop_ids, drafts, host, hist, hidden, x,
               embed, lm_val, lm_idx, lm_stat, cand, err, c_bitmask, c_default, c_exc_ptr,
               c_exc_tokens, c_exc_next, c_done, c_forced, H: tl.constexpr, V: tl.constexpr,
               T: tl.constexpr, TP2: tl.constexpr, NT: tl.constexpr, NCL: tl.constexpr,
               C: tl.constexpr, SAMPLING: tl.constexpr, TB: tl.constexpr = 0,
               TP2B: tl.constexpr = 1):
    """The step's tokens, stops, the ring, the drafter's bookkeeping and the next step's inputs.
    `one`: the step's width code (weights.STEP_ONE: 0 all T positions, 1 one, 2 TB). Greedy
    without a constraint, a step of several positions decides them at once (greedy_accept, on
    as many rows as the step has: TP2B for a narrow step); one position takes the loop below
    (its argmax over the tile maxima in chunks of 1,024: a T = 16 kernel's one-position SAMPLE
    on Qwen3-1.7B 34 us on greedy_accept's 16 rows)."""
    width = T
    if T > 1:
        width = _positions(one, TB, T)
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
    d_on = tl.load(state + D_ON)  # the device drafter: emitted tokens go to hist too
    n_hist = tl.load(state + N_HIST)
    h_cap = tl.load(state + HIST_CAP)
    keep_h = tl.load(state + KEEP_HIDDEN)  # (loaded with the others: off the critical path)
    con = tl.load(state + C_ON)
    cs = 0  # the automaton state before position t (constraint active)
    if con != 0:
        cs = tl.load(state + C_STATE, cache_modifier=".cg")
    t = 0
    go = 1
    if (T > 1) and (not SAMPLING):  # noqa: SIM102 (constexprs, then runtime)
        if (con == 0) & (width > 1):  # greedy, no automaton: every position at once
            narrow = 0
            if (TB > 1) and (TP2B < TP2):  # noqa: SIM102 (constexprs, then runtime)
                if width <= TB:  # a narrow step: its rows only
                    emitted, done, last = greedy_accept(lm_val, lm_idx, tokens, stop_ids, host,
                                                        hist, n_stop, n_out, max_new, n_hist,
                                                        h_cap, d_on, width, T, TP2B, NT)
                    narrow = 1
            if narrow == 0:
                emitted, done, last = greedy_accept(lm_val, lm_idx, tokens, stop_ids, host,
                                                    hist, n_stop, n_out, max_new, n_hist, h_cap,
                                                    d_on, width, T, TP2, NT)
            n_out += emitted
            n_hist += emitted
            go = 0
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
        ns = 0
        if (con != 0) & (over == 0):
            ns = c_step(cs, a, state, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next,
                        c_done)
        if over != 0:
            done = DONE_ERROR
            if tl.atomic_cas(err, 0, ERR_CAP) == 0:
                tl.store(err + 1, -1)
                tl.store(err + 2, seq)
            go = 0
        elif ns == -1:  # the chosen token is not allowed: nothing was (an error, not output)
            done = DONE_ERROR
            if tl.atomic_cas(err, 0, ERR_DEAD) == 0:
                tl.store(err + 1, -1)
                tl.store(err + 2, seq)
                tl.store(err + 3, a)
                tl.store(err + 4, cs)
            go = 0
        else:
            tl.store(host + HOST_HDR + n_out, a)
            tl.store(hist + n_hist, a, mask=(d_on != 0) & (n_hist < h_cap))
            n_hist += 1
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
            elif ns <= -2:  # only EOS is allowed now: it ends the output, without a forward
                tl.store(host + HOST_HDR + n_out, tl.load(state + C_EOS))
                n_out += 1
                done = DONE_STOP
            elif n_out >= max_new:
                done = DONE_LENGTH
            cs = tl.where(ns <= -2, -2 - ns, ns)
            nxt_in = tl.load(tokens + t + 1, mask=t + 1 < T, other=-1, cache_modifier=".cg")
            go = ((done == 0) & (t + 1 < width) & (nxt_in == a)).to(tl.int32)
            t += 1
    npos = pos + emitted
    if done == 0:
        if cancel != 0:
            done = DONE_CANCEL
        elif npos + T > tl.load(state + CAPACITY):
            done = DONE_CAPACITY
    if T > 1:  # noqa: SIM102 (constexpr, then runtime)
        if d_on != 0:  # steps per width; counts, acceptance mean, pause (DONE_PAUSE: ends it)
            tl.store(state + D_BY_WIDTH + one, tl.load(state + D_BY_WIDTH + one) + 1)
            if tl.load(state + M_USED) != 0:  # the MTP module's draft: its own counts
                tl.store(state + M_STEPS, tl.load(state + M_STEPS) + 1)
                tl.store(state + M_ACCEPTED, tl.load(state + M_ACCEPTED)
                         + tl.minimum(tl.maximum(emitted - 1, 0), 1))
                tl.store(state + M_USED, 0)
            elif one != 1:
                done = draft_count(state, emitted, done, width)
    if keep_h != 0:  # the kept positions' final hidden states (MTP drafters)
        keep_hidden(x, hidden, pos, emitted, H)
    # every read of tokens and x and the ring stores (hist, hidden too) are behind us
    tl.debug_barrier()
    tl.atomic_xchg(host + H_PROGRESS, n_out, sem="release", scope="sys")
    if (done != 0) & (done != DONE_PAUSE):
        tl.atomic_xchg(host + H_DONE, done, sem="release", scope="sys")
    tl.store(state + POS, npos)
    tl.store(state + N_OUT, n_out)
    tl.store(state + DONE, done)
    tl.store(state + STEPS, tl.load(state + STEPS) + 1)
    walked = 0
    code_next = one  # the next step's width code (the switching drafter may change it)
    if d_on != 0:
        tl.store(state + N_HIST, tl.minimum(n_hist, h_cap))
        if T > 1:  # noqa: SIM102
            if done == 0:  # the next step's drafts, from the history on the device
                walked = draft_next(state, hist, drafts, stop_ids, tl.minimum(n_hist, h_cap),
                                    n_out, last, cs, con, c_bitmask, c_default, c_exc_ptr,
                                    c_exc_tokens, c_exc_next, c_done, c_forced, T, TP2, HBLK)
                tl.debug_barrier()  # its drafts and N_DRAFT are visible to every thread
                if tl.load(state + D_SWITCH) != 0:  # the next step at T positions, or one
                    nd = tl.load(state + N_DRAFT) - n_out
                    conf = tl.load(state + D_CONF)
                    # the lookup's guesses alone, on too short a match: none (forced drafts
                    # are sure)
                    weak = (conf < tl.load(state + D_MATCH_MIN)) & (
                        tl.load(state + D_GUESSED) >= nd)
                    nd = tl.where(weak, 0, nd)
                    one_next = (nd <= 0).to(tl.int32)
                    # below the floor: one position even with drafts, until a probe is due
                    if tl.load(state + D_EWMA) < tl.load(state + D_FLOOR):
                        wait = tl.load(state + D_WAIT) + 1
                        probe = (nd > 0) & (wait >= tl.load(state + D_EVERY))
                        tl.store(state + D_WAIT, tl.where(probe, 0, wait))
                        tl.store(state + D_PROBE, probe.to(tl.int32))
                        one_next = (~probe).to(tl.int32)
                    else:
                        tl.store(state + D_WAIT, 0)
                    if tl.load(state + D_WIDE) != 0:  # drafting steps: narrow, or wide after
                        # a narrow or wide step that kept D_NEED drafts or on a long match
                        mw = tl.load(state + D_MATCH_WIDE)
                        wide = (((one != 1) & (emitted - 1 >= tl.load(state + D_NEED)))
                                | ((mw > 0) & (conf >= mw)))
                        one_next = tl.where(one_next == 1, 1, tl.where(wide, 0, 2))
                    tl.store(state + STEP_ONE, one_next)
                    code_next = one_next
    if T > 1:  # noqa: SIM102 (constexpr, then runtime)
        if tl.load(state + M_ON) != 0:  # the MTP module's positions after this step: the
            # kept ones since its K/V's end, at most T (M_LAZY: only when the next step is one
            # position, its draft's only use; M_W 0: its ops skip)
            kv = tl.load(state + M_KV)
            mrun = (done == 0) & ((code_next == 1) | (tl.load(state + M_LAZY) == 0))
            nm = tl.minimum(tl.maximum(npos - kv, 1), T)
            tl.store(state + M_W, tl.where(mrun, nm, 0))
            tl.store(state + M_POS, npos - nm)
            tl.store(state + M_KV, tl.where(mrun, npos, kv))
    j = tl.arange(0, TP2)
    di = n_out - 1 + j
    dm = (j >= 1) & (j < T) & (di < tl.load(state + N_DRAFT))
    nxt = tl.where(j == 0, last, tl.load(drafts + di, mask=dm, other=0))
    nxt = tl.where(dm | (j == 0), nxt, last)
    tl.store(tokens + j, nxt, mask=j < T)
    if (con != 0) & (walked == 0):  # (the drafter's walk stored them)
        c_states(cs, tokens, state, c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next, T)
    rows = T  # the next step's x: embedding rows of the input tokens it reads (one
    # position, the narrow ones or all T: the rows past them are not read)
    if T > 1:
        rows = _positions(code_next, TB, T)
    for tt in range(0, rows):
        tok = tl.sum(tl.where(j == tt, nxt, 0), axis=0).to(tl.int64)
        for h0 in tl.static_range(0, H, 1024):  # unrolled: one round of loads
            hc = h0 + tl.arange(0, 1024)
            row = tl.load(embed + tok * H + hc, mask=hc < H)
            tl.store(x + tt * H + hc, row, mask=hc < H)
