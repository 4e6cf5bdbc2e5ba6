"""Structured outputs on the device: mask logits by the automaton state, then advance the state.

`mask_logits`: fp32 logits [V] in place: -inf where the bitmask row of the current state (read
from a device int32 [1]) has no bit; tokens past the table's 32 * W ids are never allowed.
`advance_state`: after sampling, state = the next state of (state, token) in the automaton's
default-next-state form: -1 when the token's bit is clear in the state's bitmask row, else the
exception's next state when a binary search finds the token among the state's sorted exception
tokens (CSR), else the state's default next state. State -1 masks every token and stays -1
(a dead state stays dead, visibly). Both read the state and the token from device memory and
write the state back, so a CUDA graph or a persistent kernel walks the automaton without a host
round trip. Tables come from `constraints.TokenAutomaton`; this file knows nothing about schemas
or tokenizers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mask_kernel(logits_ptr, bitmask_ptr, state_ptr, V, W, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # token ids [BLOCK]
    s = tl.load(state_ptr)
    n = tl.where(s >= 0, tl.minimum(W * 32, V), 0)  # ids the row can allow (none if dead)
    row = tl.maximum(s, 0).to(tl.int64) * W
    word = tl.load(bitmask_ptr + row + (i >> 5), mask=i < n, other=0)  # [BLOCK] int32
    banned = ((word >> (i & 31)) & 1) == 0
    tl.store(logits_ptr + i, tl.full((BLOCK,), float("-inf"), tl.float32), mask=(i < V) & banned)


@triton.jit
def _advance_kernel(state_ptr, token_ptr, bitmask_ptr, default_ptr, exc_ptr, exc_tokens_ptr,
                    exc_next_ptr, W, STEPS: tl.constexpr):
    s = tl.load(state_ptr)
    t = tl.load(token_ptr).to(tl.int32)
    ok = (s >= 0) & (t >= 0) & (t < W * 32)
    s = tl.maximum(s, 0)
    tc = tl.where(ok, t, 0)
    word = tl.load(bitmask_ptr + s.to(tl.int64) * W + (tc >> 5), mask=ok, other=0)
    ok = ok & (((word >> (tc & 31)) & 1) != 0)  # the allowed bit
    lo = tl.load(exc_ptr + s)
    end = tl.load(exc_ptr + s + 1)
    hi = end
    for _ in tl.static_range(STEPS):  # lower bound of t in exc_tokens[lo:hi]; 2^STEPS > n
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(exc_tokens_ptr + mid, mask=active, other=0)
        lo = tl.where(active & (v < t), mid + 1, lo)
        hi = tl.where(active & (v >= t), mid, hi)
    hit = lo < end
    v = tl.load(exc_tokens_ptr + lo, mask=hit, other=-1)
    hit = hit & (v == t)
    nxt = tl.load(exc_next_ptr + lo, mask=hit, other=-1)
    dflt = tl.load(default_ptr + s)
    tl.store(state_ptr, tl.where(ok, tl.where(hit, nxt, dflt), -1))


def _check_state(state: torch.Tensor, device: torch.device) -> None:
    assert state.shape == (1,) and state.dtype == torch.int32, "state must be int32 [1]"
    assert state.device == device, "state on another device"


def mask_logits(logits: torch.Tensor, bitmask: torch.Tensor, state: torch.Tensor,
                block: int = 1024) -> torch.Tensor:
    """logits fp32 [V] (in place), bitmask int32 [S, W], state int32 [1] -> logits."""
    assert logits.dim() == 1 and logits.dtype == torch.float32 and logits.is_contiguous(), (
        "logits must be contiguous fp32 [V]")
    assert bitmask.dim() == 2 and bitmask.dtype == torch.int32 and bitmask.is_contiguous(), (
        "bitmask must be contiguous int32 [S, W]")
    assert bitmask.device == logits.device, "bitmask on another device"
    _check_state(state, logits.device)
    V, W = logits.shape[0], bitmask.shape[1]
    _mask_kernel[(triton.cdiv(V, block),)](logits, bitmask, state, V, W, BLOCK=block)
    return logits


def search_steps(max_row: int) -> int:
    """Binary-search iterations that cover a CSR row of `max_row` entries."""
    return max(1, int(max_row).bit_length())


def advance_state(state: torch.Tensor, token: torch.Tensor, bitmask: torch.Tensor,
                  default: torch.Tensor, exc_ptr: torch.Tensor, exc_tokens: torch.Tensor,
                  exc_next: torch.Tensor, max_exc: int) -> torch.Tensor:
    """state int32 [1] (in place) <- next state of (state, token int32/int64 [1]) in the tables
    bitmask int32 [S, W], default int32 [S], exc_ptr int32 [S + 1], exc_tokens / exc_next int32
    [E >= 1] (rows sorted, at most `max_exc` long); -1 when the token is not allowed. Returns
    state."""
    dev = state.device
    _check_state(state, dev)
    assert token.shape == (1,) and token.dtype in (torch.int32, torch.int64), (
        "token must be int32/int64 [1]")
    assert token.device == dev, "token on another device"
    assert bitmask.dim() == 2 and bitmask.dtype == torch.int32 and bitmask.is_contiguous(), (
        "bitmask must be contiguous int32 [S, W]")
    for name, t in (("bitmask", bitmask), ("default", default), ("exc_ptr", exc_ptr),
                    ("exc_tokens", exc_tokens), ("exc_next", exc_next)):
        assert t.dtype == torch.int32 and t.is_contiguous(), f"{name} must be contiguous int32"
        assert t.device == dev, f"{name} on another device"
    S = bitmask.shape[0]
    assert default.shape == (S,) and exc_ptr.shape == (S + 1,), "default / exc_ptr shapes"
    assert exc_tokens.dim() == 1 and exc_tokens.shape == exc_next.shape and exc_tokens.numel(), (
        "exc_tokens and exc_next must be 1-D, equally long, non-empty")
    _advance_kernel[(1,)](state, token, bitmask, default, exc_ptr, exc_tokens, exc_next,
                          bitmask.shape[1], STEPS=search_steps(max_exc))
    return state


# ---- references (PyTorch): the oracles of the tests and the CPU path ----------------------

def mask_logits_ref(logits: torch.Tensor, bitmask: torch.Tensor,
                    state: torch.Tensor) -> torch.Tensor:
    s = int(state[0])
    V, W = logits.shape[0], bitmask.shape[1]
    ids = torch.arange(V, device=logits.device)
    if s < 0:
        allowed = torch.zeros(V, dtype=torch.bool, device=logits.device)
    else:
        words = bitmask[s].long()[(ids >> 5).clamp(max=W - 1)]  # [V]
        allowed = (((words >> (ids & 31)) & 1) == 1) & (ids < W * 32)
    return logits.masked_fill_(~allowed, float("-inf"))


def advance_state_ref(state: torch.Tensor, token: torch.Tensor, bitmask: torch.Tensor,
                      default: torch.Tensor, exc_ptr: torch.Tensor, exc_tokens: torch.Tensor,
                      exc_next: torch.Tensor, max_exc: int = 0) -> torch.Tensor:
    s, t = int(state[0]), int(token[0])
    nxt = -1
    if s >= 0 and 0 <= t < bitmask.shape[1] * 32 and (int(bitmask[s, t >> 5]) >> (t & 31)) & 1:
        lo, hi = int(exc_ptr[s]), int(exc_ptr[s + 1])
        hit = (exc_tokens[lo:hi] == t).nonzero()
        nxt = int(exc_next[lo + int(hit[0])]) if hit.numel() else int(default[s])
    return state.fill_(nxt)
