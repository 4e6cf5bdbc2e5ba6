"""The token automaton: a compiled constraint as dense tables a device can walk without the host.

Built from an outlines-core `Index` (regex DFA x vocabulary): states renumbered 0..S-1 (0 is the
start), a per-state bitmask of allowed tokens, the transitions in CSR form (per state its sorted
allowed token ids and their next states), accepting flags, and per state the forced token (the
only allowed one, or -1: speculative decoding can take it without asking the model). EOS ids are
allowed exactly in accepting states and loop back to the same state. Also maps our tokenizer's
token strings to the bytes outlines-core matches. Knows nothing about schemas or models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..tokenizer import Tokenizer


@dataclass(eq=False)
class TokenAutomaton:
    """Tables of one constraint over one vocabulary (S states, V token ids, W = ceil(V / 32)).

    bitmask     int32 [S, W]  bit (t % 32) of word t // 32 set <=> token t allowed in the state
    row_ptr     int32 [S + 1] CSR: the state's entries are row_ptr[s] .. row_ptr[s + 1] - 1
    tokens      int32 [nnz]   allowed token ids, sorted within each state
    next_state  int32 [nnz]   the state after taking tokens[i]
    accepting   bool  [S]     the text so far is complete (EOS allowed)
    done        bool  [S]     only EOS is allowed: the generation ends here
    forced      int32 [S]     the only allowed token, or -1
    """

    bitmask: torch.Tensor
    row_ptr: torch.Tensor
    tokens: torch.Tensor
    next_state: torch.Tensor
    accepting: torch.Tensor
    done: torch.Tensor
    forced: torch.Tensor
    eos_ids: tuple[int, ...]
    vocab_size: int
    max_row: int  # the longest CSR row (bounds the device binary search)
    state0: int = 0
    _copies: dict[str, TokenAutomaton] = field(default_factory=dict, repr=False)

    @property
    def num_states(self) -> int:
        return self.bitmask.shape[0]

    @property
    def device(self) -> torch.device:
        return self.bitmask.device

    @property
    def nbytes(self) -> int:
        t = (self.bitmask, self.row_ptr, self.tokens, self.next_state, self.accepting, self.done,
             self.forced)
        return sum(x.numel() * x.element_size() for x in t)

    def to(self, device: torch.device | str) -> TokenAutomaton:
        """The same automaton with its tables on `device` (copied once, then memoized)."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = str(device)
        if key not in self._copies:
            tables = {k: getattr(self, k).to(device) for k in
                      ("bitmask", "row_ptr", "tokens", "next_state", "accepting", "done",
                       "forced")}
            self._copies[key] = TokenAutomaton(**tables, eos_ids=self.eos_ids,
                                               vocab_size=self.vocab_size, max_row=self.max_row,
                                               state0=self.state0)
        return self._copies[key]

    # ---- host queries (tests, the reference backend) ---------------------------------------

    def allowed(self, state: int) -> torch.Tensor:
        """Allowed token ids of `state`, sorted (int32 [n])."""
        return self.tokens[int(self.row_ptr[state]):int(self.row_ptr[state + 1])]

    def next(self, state: int, token: int) -> int:
        """The state after `token`, or -1 when `token` is not allowed in `state`."""
        lo, hi = int(self.row_ptr[state]), int(self.row_ptr[state + 1])
        row = self.tokens[lo:hi]
        i = int(torch.searchsorted(row, torch.tensor(token, dtype=row.dtype, device=row.device)))
        return int(self.next_state[lo + i]) if i < hi - lo and int(row[i]) == token else -1

    def advance(self, state: int, token: int) -> int:
        """`next` for a token the mask allowed (a disallowed one is a bug, not an input error)."""
        nxt = self.next(state, token)
        assert nxt >= 0, f"token {token} is not allowed by the constraint in state {state}"
        return nxt

    def is_accepting(self, state: int) -> bool:
        return bool(self.accepting[state])

    def is_done(self, state: int) -> bool:
        return bool(self.done[state])

    def forced_token(self, state: int) -> int:
        return int(self.forced[state])

    def allowed_mask(self, state: int, n: int) -> torch.Tensor:
        """bool [n] on the tables' device: token t allowed in `state` (t >= V: never)."""
        row = self.bitmask[state]  # [W]
        shifts = torch.arange(32, dtype=torch.int32, device=row.device)
        bits = ((row[:, None] >> shifts) & 1).bool().flatten()  # [W * 32]
        if n <= bits.numel():
            return bits[:n]
        return torch.cat([bits, bits.new_zeros(n - bits.numel())])

    def mask_logits(self, logits: torch.Tensor, state: int) -> torch.Tensor:
        """logits [V'] with every token not allowed in `state` set to -inf (a new tensor)."""
        allowed = self.allowed_mask(state, logits.shape[-1]).to(logits.device)
        return logits.masked_fill(~allowed, float("-inf"))


def from_index(index: Any, eos_ids: tuple[int, ...], vocab_size: int) -> TokenAutomaton:
    """Tables from an outlines-core Index built over a vocabulary without special tokens."""
    trans: dict[int, dict[int, int]] = index.get_transitions()
    s0 = index.get_initial_state()
    finals = set(index.get_final_states())
    ids = {s0} | set(trans) | finals | {n for d in trans.values() for n in d.values()}
    order = [s0] + sorted(ids - {s0})
    sparse = np.array(order, dtype=np.int64)
    perm = np.argsort(sparse)
    eos = np.array(sorted(set(eos_ids)), dtype=np.int64)
    rows_t, rows_n = [], []
    for i, s in enumerate(order):
        d = trans.get(s, {})
        t = np.fromiter(d.keys(), np.int64, len(d))
        n = np.fromiter(d.values(), np.int64, len(d))
        keep = ~np.isin(t, eos)  # outlines' own EOS entries; ours are added below
        t, n = t[keep], perm[np.searchsorted(sparse, n[keep], sorter=perm)]
        if s in finals:
            t, n = np.concatenate([t, eos]), np.concatenate([n, np.full(len(eos), i)])
        o = np.argsort(t, kind="stable")
        rows_t.append(t[o])
        rows_n.append(n[o])
    lens = np.array([len(r) for r in rows_t], dtype=np.int64)
    row_ptr = np.concatenate([[0], np.cumsum(lens)])
    tokens = np.concatenate(rows_t) if rows_t else np.zeros(0, np.int64)
    nxt = np.concatenate(rows_n) if rows_n else np.zeros(0, np.int64)
    S, W = len(order), (vocab_size + 31) // 32
    assert tokens.size == 0 or tokens.max() < W * 32, "a token id is beyond the vocabulary"
    state_of = np.repeat(np.arange(S), lens)
    flat = state_of * W + (tokens >> 5)
    words = np.bincount(flat, weights=(1 << (tokens & 31)).astype(np.float64), minlength=S * W)
    bitmask = words.astype(np.uint32).view(np.int32).reshape(S, W)  # bits are distinct: sum = or
    accepting = np.array([s in finals for s in order])
    done = np.array([r.size > 0 and np.isin(r, eos).all() for r in rows_t])
    forced = np.array([int(r[0]) if r.size == 1 else -1 for r in rows_t], dtype=np.int64)
    i32 = torch.int32
    return TokenAutomaton(
        bitmask=torch.from_numpy(bitmask.copy()), row_ptr=torch.from_numpy(row_ptr).to(i32),
        tokens=torch.from_numpy(tokens).to(i32), next_state=torch.from_numpy(nxt).to(i32),
        accepting=torch.from_numpy(accepting), done=torch.from_numpy(done),
        forced=torch.from_numpy(forced).to(i32), eos_ids=tuple(int(e) for e in eos),
        vocab_size=vocab_size, max_row=int(lens.max()) if S else 0,
    )


def _gpt2_bytes() -> dict[str, int]:
    from ..loaders.gguf_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(tokenizer: Tokenizer) -> dict[bytes, list[int]]:
    """Bytes of every ordinary token, as outlines-core matches them: byte-level BPE spellings
    (GPT-2's printable alphabet) mapped back to bytes, SentencePiece '▁' to a space and <0xAB>
    to its byte; non-special added tokens as their UTF-8 text. Special tokens are left out."""
    tok = tokenizer.tok
    added = tok.get_added_tokens_decoder()
    dec = tok.decoder.__getstate__() if tok.decoder is not None else b""
    byte_level = b"ByteLevel" in dec
    u2b = _gpt2_bytes() if byte_level else {}
    out: dict[bytes, list[int]] = {}
    for i in range(tokenizer.vocab_size):
        a = added.get(i)
        if a is not None:
            if a.special:
                continue
            b = a.content.encode()
        else:
            s = tok.id_to_token(i)
            if s is None:
                continue
            if byte_level and all(c in u2b for c in s):
                b = bytes(u2b[c] for c in s)
            elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                b = bytes([int(s[3:5], 16)])
            else:
                b = s.replace("\u2581", " ").encode()
        if b:
            out.setdefault(b, []).append(i)
    return out
