"""Structured outputs on the device: mask logits by the automaton state, then advance the state.

`mask_logits`: fp32 logits [V] in place: -inf where the bitmask row of the current state (read
from a device int32 [1]) has no bit; tokens past the table's 32 * W ids are never allowed.
`advance_state`: after sampling, state = the next state of (state, token), found by a binary
search of the token among the state's sorted CSR entries; a token the state does not allow gives
-1, and state -1 masks every token (a dead state stays dead, visibly). Both read the state and
the token from device memory and write the state back, so a CUDA graph or a persistent kernel
walks the automaton without a host round trip. Tables come from `constraints.TokenAutomaton`;
this file knows nothing about schemas or tokenizers.
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
def _advance_kernel(state_ptr, token_ptr, row_ptr, tokens_ptr, next_ptr, STEPS: tl.constexpr):
    s = tl.load(state_ptr)
    t = tl.load(token_ptr).to(tl.int32)
    valid = s >= 0
    s = tl.maximum(s, 0)
    lo = tl.load(row_ptr + s)
    end = tl.load(row_ptr + s + 1)
    hi = end
    for _ in tl.static_range(STEPS):  # lower bound of t in tokens[lo:hi]; STEPS >= log2(n + 1)
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(tokens_ptr + mid, mask=active, other=0)
        lo = tl.where(active & (v < t), mid + 1, lo)
        hi = tl.where(active & (v >= t), mid, hi)
    found = valid & (lo < end)
    v = tl.load(tokens_ptr + lo, mask=found, other=-1)
    found = found & (v == t)
    nxt = tl.load(next_ptr + lo, mask=found, other=-1)
    tl.store(state_ptr, tl.where(found, nxt, -1))


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


def advance_state(state: torch.Tensor, token: torch.Tensor, row_ptr: torch.Tensor,
                  tokens: torch.Tensor, next_state: torch.Tensor, max_row: int) -> torch.Tensor:
    """state int32 [1] (in place) <- next state of (state, token int32/int64 [1]) in the CSR
    tables row_ptr int32 [S + 1], tokens / next_state int32 [nnz] (rows sorted, at most
    `max_row` long); -1 when the token is not allowed. Returns state."""
    dev = state.device
    _check_state(state, dev)
    assert token.shape == (1,) and token.dtype in (torch.int32, torch.int64), (
        "token must be int32/int64 [1]")
    for name, t in (("row_ptr", row_ptr), ("tokens", tokens), ("next_state", next_state)):
        assert t.dim() == 1 and t.dtype == torch.int32 and t.is_contiguous(), (
            f"{name} must be contiguous int32 1-D")
        assert t.device == dev, f"{name} on another device"
    assert token.device == dev, "token on another device"
    assert tokens.shape == next_state.shape, "tokens and next_state differ in length"
    _advance_kernel[(1,)](state, token, row_ptr, tokens, next_state,
                          STEPS=search_steps(max_row))
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


def advance_state_ref(state: torch.Tensor, token: torch.Tensor, row_ptr: torch.Tensor,
                      tokens: torch.Tensor, next_state: torch.Tensor,
                      max_row: int = 0) -> torch.Tensor:
    s, t = int(state[0]), int(token[0])
    nxt = -1
    if s >= 0:
        lo, hi = int(row_ptr[s]), int(row_ptr[s + 1])
        hit = (tokens[lo:hi] == t).nonzero()
        nxt = int(next_state[lo + int(hit[0])]) if hit.numel() else -1
    return state.fill_(nxt)
