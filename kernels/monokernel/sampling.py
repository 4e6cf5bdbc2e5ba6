"""The monokernel's sampling rules in torch: what the kernel computes, exactly, as an oracle.

Greedy: the first index of the max. Temperature: Gumbel-max, argmax(l / t + g) with
g = -log(-log(u)), u = Philox(key = seed + position, counter = token id) (what tl.rand draws for
int32 offsets), so every LM-head tile draws its own tokens' noise and positions are independent
of how many are scored per step: plain and speculative decoding sample the same tokens.
Top-k / top-p (HF order: top-k on l / t, softmax, keep the smallest prefix of mass >= top_p):
Gumbel-max over the kept set, found among the top `cap` candidates; a request whose kept set may
reach beyond the cap is an error (ERR_CAP), never an approximation. Candidates are int64 keys
(order-preserving bits of the logit, then the inverted token id, so ties go to the lower id).

Constraints: logits of tokens the automaton state does not allow are -inf before any of these
rules (and never candidates: a -inf logit gets MIN_KEY); after the choice the state advances by
the automaton's tables (`constraint_next`: the bitmask bit, then a binary search in the state's
sorted exceptions, else its default next state), as kernels/constraint_mask.py does.
"""

from __future__ import annotations

import numpy as np
import torch

from agentfast.engine.errors import RequestError

from .weights import FILTERED, GREEDY, MATCH_CAP, TEMPERATURE

MIN_KEY = -(1 << 63)
_M32 = np.uint64(0xFFFFFFFF)


def philox_uniform(key: int, offsets: torch.Tensor) -> torch.Tensor:
    """tl.rand(key, offsets) for int32 offsets: float32 uniforms in [0, 1), on offsets' device."""
    c0 = offsets.cpu().numpy().astype(np.int64).astype(np.uint64) & _M32
    c1 = np.zeros_like(c0)
    c2, c3 = np.zeros_like(c0), np.zeros_like(c0)
    key &= (1 << 64) - 1
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    ra, rb = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        _c0, _c2 = c0, c2
        c0 = ((rb * _c2) >> np.uint64(32)) ^ c1 ^ k0
        c2 = ((ra * _c0) >> np.uint64(32)) ^ c3 ^ k1
        c1, c3 = (rb * _c2) & _M32, (ra * _c0) & _M32
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _M32, (k1 + np.uint64(0xBB67AE85)) & _M32
    x = c0.astype(np.uint32).view(np.int32)
    x = np.where(x < 0, ~x, x)
    u = x.astype(np.float32) * np.float32(4.6566127342e-10)
    return torch.from_numpy(u).to(offsets.device)


def gumbel(key: int, ids: torch.Tensor) -> torch.Tensor:
    """-log(-log(u)) float32 for token ids (int) under Philox key `key`."""
    u = philox_uniform(key, ids.to(torch.int32))
    return -torch.log(-torch.log(u))


def make_keys(vals: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits and int token ids -> int64 keys ordered like (logit, -id)."""
    b = vals.float().contiguous().view(torch.int32)
    o = torch.where(b >= 0, b, b ^ 0x7FFFFFFF).long()
    return (o << 32) | (0x7FFFFFFF - ids.long())


def split_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    o = (keys >> 32).to(torch.int32)
    vals = torch.where(o >= 0, o, o ^ 0x7FFFFFFF).contiguous().view(torch.float32)
    return vals, (0x7FFFFFFF - (keys & 0xFFFFFFFF)).long()


def sampling_mode(temperature: float, top_k: int, top_p: float, vocab: int, cap: int
                  ) -> tuple[int, int]:
    """(mode, top_k as the kernel takes it); RequestError when top-k exceeds the cap."""
    if temperature <= 0 or top_k == 1:
        return GREEDY, 0
    k = 0 if top_k >= vocab else top_k
    if k == 0 and top_p >= 1.0:
        return TEMPERATURE, 0
    if k > cap:
        raise RequestError(f"top_k={top_k} exceeds the monokernel's candidate cap of {cap} "
                           "(use a smaller top_k or another backend)")
    return FILTERED, k


def choose_filtered(keys: torch.Tensor, z_all: float, vocab: int, temperature: float,
                    top_k: int, top_p: float, key: int) -> tuple[int, bool]:
    """keys: the global top-`cap` candidates [cap] int64, sorted descending (MIN_KEY padding);
    z_all: sum of exp(l / t - max) over the whole vocabulary. -> (token, cap_exceeded)."""
    cap = keys.numel()
    vals, ids = split_keys(keys)
    valid = keys != MIN_KEY  # (fewer than cap valid: a constraint allows fewer tokens)
    s = vals / temperature  # [cap]
    e = torch.where(valid, torch.exp(s - s[0]), torch.zeros_like(s))
    over = False
    if top_k > 0:
        kth = s[top_k - 1] if bool(valid[top_k - 1]) else float("-inf")
        kept = valid & (s >= kth)
        z = float(e[kept].sum())
        over = bool(kept[-1]) and vocab > cap  # ties with the k-th may go on past the cap
    else:
        kept, z = valid, z_all
    if top_p < 1.0:
        ek = torch.where(kept, e, torch.zeros_like(e))
        before = torch.cumsum(ek, 0) - ek
        kept = kept & (before < top_p * z)
        if top_k == 0 and vocab > cap and bool(valid[-1]) and float(ek.sum()) < top_p * z:
            over = True  # the nucleus reaches past the candidates
    score = torch.where(kept, s + gumbel(key, ids.clamp(min=0)), torch.full_like(s, -np.inf))
    return int(ids[int(torch.argmax(score))]), over


def choose(logits: torch.Tensor, mode: int, temperature: float, top_k: int, top_p: float,
           key: int, cap: int) -> tuple[int, bool]:
    """One token from a full logits row [V] by the kernel's rule (the first decoded token is
    chosen here, on the host, from the prefill logits)."""
    logits = logits.float()
    if mode == GREEDY:
        return int(torch.argmax(logits)), False
    s = logits / temperature
    if mode == TEMPERATURE:
        ids = torch.arange(logits.numel(), device=logits.device)
        return int(torch.argmax(s + gumbel(key, ids))), False
    vals, ids = torch.sort(logits, descending=True, stable=True)
    keys = torch.full((cap,), MIN_KEY, dtype=torch.int64, device=logits.device)
    n = min(cap, logits.numel())
    keys[:n] = candidate_keys(vals[:n], ids[:n])
    z = float(torch.exp(s - s.max()).sum())
    return choose_filtered(keys, z, logits.numel(), temperature, top_k, top_p, key)


def candidate_keys(vals: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """make_keys, with MIN_KEY (no candidate) for -inf logits (tokens a constraint masked)."""
    return torch.where(torch.isneginf(vals), MIN_KEY, make_keys(vals, ids))


# ---- constraints: the kernel's mask and walk, with the Buffers' c_* tables -----------------

def mask_rows(logits: torch.Tensor, n0: int, states: list[int], bitmask: torch.Tensor,
              words: int) -> torch.Tensor:
    """logits [T, n] of token ids n0.. -> -inf where the state of row t (states[t]; -1: dead,
    nothing allowed) does not allow the token (ids past the table's 32 * words: never)."""
    ids = torch.arange(n0, n0 + logits.shape[1], device=logits.device)
    ok = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    inside = ids < words * 32
    for t, s in enumerate(states):
        if s >= 0:
            w = bitmask[s].long()[(ids >> 5).clamp(max=words - 1)]
            ok[t] = inside & (((w >> (ids & 31)) & 1) == 1)
    return logits.masked_fill(~ok, float("-inf"))


def constraint_next(b, s: int, tok: int) -> int:
    """The state after `tok` in state `s` by the Buffers' tables (-1: not allowed, or dead)."""
    words = b.c_bitmask.shape[1]
    if s < 0 or not 0 <= tok < words * 32 or not (int(b.c_bitmask[s, tok >> 5]) >> (tok & 31)) & 1:
        return -1
    lo, end = int(b.c_exc_ptr[s]), int(b.c_exc_ptr[s + 1])
    i = lo + int(torch.searchsorted(b.c_exc_tokens[lo:end], tok)) if end > lo else end
    if i < end and int(b.c_exc_tokens[i]) == tok:
        return int(b.c_exc_next[i])
    return int(b.c_default[s])


# ---- the device n-gram drafter (ops_sample.draft_next): what it drafts --------------------

def ngram_match(hist: list[int], min_ngram: int, max_ngram: int) -> tuple[int, int]:
    """spec_decode's NgramDrafter rule: (n, e), the longest suffix of `hist` (max_ngram down
    to min_ngram tokens) that also ends earlier with a token after it, and its latest end e;
    (0, -1) when none."""
    size = len(hist)
    if size <= min_ngram:
        return 0, -1
    for n in range(min(max_ngram, size - 1), min_ngram - 1, -1):
        suffix = hist[size - n:]
        for e in range(size - 2, n - 2, -1):  # e: the occurrence's last position
            if hist[e - n + 1:e + 1] == suffix:
                return n, e
    return 0, -1


def match_span(hist: list[int], n: int, e: int, cap: int = MATCH_CAP) -> int:
    """ops_sample.match_span: the match (n tokens ending at e and at the end of `hist`)
    extended back while the tokens before both agree, by `cap` at most; 0 when n is 0."""
    if n <= 0:
        return 0
    size, i = len(hist), 0
    while i < cap and e - n - i >= 0 and hist[e - n - i] == hist[size - 1 - n - i]:
        i += 1
    return n + i


def ngram_propose(hist: list[int], k: int, min_ngram: int, max_ngram: int) -> list[int]:
    """Up to k of the tokens after ngram_match's occurrence."""
    return _after(hist, *ngram_match(hist, min_ngram, max_ngram), k)


def _after(hist: list[int], n: int, e: int, k: int) -> list[int]:
    """Up to k tokens after a match of n tokens ending at e (none without a match)."""
    return hist[e + 1:e + 1 + k] if k > 0 and n > 0 else []


def device_drafts(b, hist: list[int], k: int, min_ngram: int, max_ngram: int, state: int,
                  stops: set[int], con: bool) -> tuple[list[int], int, int]:
    """(drafts, how many are the lookup's, the confidence weights.D_CONF): the proposal
    trimmed as the host's
    engine/backends/drafting.propose_drafts trims it, with the Buffers' tables: with a
    constraint (`state` after the last token) cut before a token it rejects, forced tokens
    (c_forced) drafted instead of or past the proposal, up to k; cut after a stop id or a
    state that allows only EOS."""
    n, e = ngram_match(hist, min_ngram, max_ngram)
    props = _after(hist, n, e, k)
    out: list[int] = []
    guessed = 0
    while len(out) < k:
        forced = int(b.c_forced[state]) if con else -1
        if guessed == len(out) and guessed < len(props) and forced in (-1, props[guessed]):
            d, g = props[guessed], 1
        elif forced >= 0:
            d, g = forced, 0
        else:
            break
        if con:
            state = constraint_next(b, state, d)
            if state < 0:
                break
        out.append(d)
        guessed += g
        if d in stops or (con and bool(b.c_done[state])):
            break
    span = match_span(hist, n, e, MATCH_CAP) if guessed else 0
    return out, guessed, max(span, len(out) - guessed)
