"""The token automaton: a compiled constraint as dense tables a device can walk without the host.

Built from an outlines-core `Index` (regex DFA x vocabulary; the regex is followed by an end
sentinel, see `index_graph`): states renumbered 0..S-1 (0 is the start), a per-state bitmask of
allowed tokens (the one source of "is this token allowed"), the transitions in
default-next-state form (per state the most common target of its allowed tokens, plus a CSR
list of only the exceptions: the sorted allowed tokens that go elsewhere), accepting flags, and
per state the forced token (the only allowed one, or -1: speculative decoding can take it
without asking the model). EOS ids are allowed exactly in accepting states and loop back to the
same state. An "any character" state of a 49k vocabulary is then a 6 KiB bitmask row and a
handful of exceptions instead of 49k (token, next state) pairs. Also maps our tokenizer's token
strings to the bytes outlines-core matches. Knows nothing about schemas or models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch

from ..tokenizer import Tokenizer

# Every regex is compiled as `(?:R)END`, END a token of its own (see `index_graph`): outlines-core
# mishandles the tokens out of states whose text matches R, and in `(?:R)END` the ordinary tokens
# reach none. A private-use code point (U+10FFFD): rare in text, and spelled by ordinary tokens
# (byte tokens) only on paths that the trim in `index_graph` removes.
END = "\U0010fffd"
TABLES = ("bitmask", "default", "exc_ptr", "exc_tokens", "exc_next", "accepting", "done",
          "forced")


@dataclass(eq=False)
class TokenAutomaton:
    """Tables of one constraint over one vocabulary (S states, V token ids, W = ceil(V / 32)).

    bitmask     int32 [S, W]  bit (t % 32) of word t // 32 set <=> token t allowed in the state
    default     int32 [S]     the next state of an allowed token that is not an exception
                              (the most common target in the state; -1 if nothing is allowed)
    exc_ptr     int32 [S + 1] CSR: the state's exceptions are exc_ptr[s] .. exc_ptr[s + 1] - 1
    exc_tokens  int32 [E']    allowed tokens whose next state is not the default, sorted per state
    exc_next    int32 [E']    the state after exc_tokens[i]
    accepting   bool  [S]     the text so far is complete (EOS allowed)
    done        bool  [S]     only EOS is allowed: the generation ends here
    forced      int32 [S]     the only allowed token, or -1

    next(s, t) = -1 if bit t of bitmask[s] is clear, else exc_next[i] if exc_tokens[i] == t for
    an i of the state's exceptions, else default[s]. E' = max(E, 1): one unused padding entry
    when no state has exceptions, so the device tables are never empty.
    """

    bitmask: torch.Tensor
    default: torch.Tensor
    exc_ptr: torch.Tensor
    exc_tokens: torch.Tensor
    exc_next: torch.Tensor
    accepting: torch.Tensor
    done: torch.Tensor
    forced: torch.Tensor
    eos_ids: tuple[int, ...]
    vocab_size: int
    max_exc: int  # the longest exception row (bounds the device binary search)
    state0: int = 0
    _copies: dict[str, TokenAutomaton] = field(default_factory=dict, repr=False)
    _np: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_states(self) -> int:
        return self.bitmask.shape[0]

    @property
    def device(self) -> torch.device:
        return self.bitmask.device

    @property
    def num_transitions(self) -> int:
        """Allowed (state, token) pairs: the entries a full transition list would hold."""
        return int(self.allowed_counts().sum())

    @property
    def num_exceptions(self) -> int:
        return int(self.exc_ptr[-1])

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in TABLES)

    @property
    def full_csr_nbytes(self) -> int:
        """Bytes of the same automaton with every allowed transition listed (the former form:
        bitmask, row_ptr [S + 1], tokens and next_state [nnz], the flags and forced)."""
        S = self.num_states
        return (self.bitmask.numel() * 4 + (S + 1) * 4 + 2 * 4 * self.num_transitions
                + 2 * S + 4 * S)

    def to(self, device: torch.device | str) -> TokenAutomaton:
        """The same automaton with its tables on `device` (copied once, then memoized)."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = str(device)
        if key not in self._copies:
            tables = {k: getattr(self, k).to(device) for k in TABLES}
            self._copies[key] = TokenAutomaton(**tables, eos_ids=self.eos_ids,
                                               vocab_size=self.vocab_size, max_exc=self.max_exc,
                                               state0=self.state0)
        return self._copies[key]

    def padded(self, vocab_size: int) -> TokenAutomaton:
        """The same automaton over a vocabulary of `vocab_size` >= V ids: the bitmask widened
        to ceil(vocab_size / 32) words, every added id disallowed (a model whose embedding has
        more rows than its tokenizer has tokens; the GPU bench's larger shapes)."""
        if vocab_size < self.vocab_size:
            raise ValueError(f"cannot pad {self.vocab_size} ids down to {vocab_size}")
        W = (vocab_size + 31) // 32
        bitmask = self.bitmask.new_zeros(self.num_states, W)
        bitmask[:, :self.bitmask.shape[1]] = self.bitmask
        tables = {k: getattr(self, k).clone() for k in TABLES if k != "bitmask"}
        return TokenAutomaton(bitmask=bitmask, **tables, eos_ids=self.eos_ids,
                              vocab_size=vocab_size, max_exc=self.max_exc, state0=self.state0)

    # ---- host queries (tests, the reference backend, the host following a device walk) ------

    def _host(self, name: str) -> np.ndarray:
        """A numpy view (CPU tables) or copy of a table, made once: host lookups per token."""
        a = self._np.get(name)
        if a is None:
            a = self._np[name] = getattr(self, name).cpu().numpy()
        return a

    def is_allowed(self, state: int, token: int) -> bool:
        bm = self._host("bitmask")
        if not 0 <= token < bm.shape[1] * 32:
            return False
        return bool((int(bm[state, token >> 5]) >> (token & 31)) & 1)

    def allowed_counts(self) -> np.ndarray:
        """int64 [S]: allowed tokens per state (popcount of the bitmask rows)."""
        bits = np.unpackbits(self._host("bitmask").view(np.uint8), axis=1)
        return bits.sum(axis=1, dtype=np.int64)

    def allowed(self, state: int) -> torch.Tensor:
        """Allowed token ids of `state`, sorted (int32 [n], on the CPU)."""
        row = self._host("bitmask")[state].view(np.uint8)
        ids = np.flatnonzero(np.unpackbits(row, bitorder="little"))
        return torch.from_numpy(ids.astype(np.int32))

    def next(self, state: int, token: int) -> int:
        """The state after `token`, or -1 when `token` is not allowed in `state`."""
        if not self.is_allowed(state, token):
            return -1
        ptr = self._host("exc_ptr")
        lo, hi = int(ptr[state]), int(ptr[state + 1])
        if lo < hi:
            row = self._host("exc_tokens")[lo:hi]
            i = int(np.searchsorted(row, token))
            if i < hi - lo and int(row[i]) == token:
                return int(self._host("exc_next")[lo + i])
        return int(self._host("default")[state])

    def next_states(self, state: int) -> torch.Tensor:
        """int32 [32 * W]: the next state of every token id in `state` (-1: not allowed)."""
        row = self._host("bitmask")[state].view(np.uint8)
        allowed = np.unpackbits(row, bitorder="little").astype(bool)
        out = np.where(allowed, self._host("default")[state], -1).astype(np.int32)
        lo, hi = int(self._host("exc_ptr")[state]), int(self._host("exc_ptr")[state + 1])
        out[self._host("exc_tokens")[lo:hi]] = self._host("exc_next")[lo:hi]
        return torch.from_numpy(out)

    def advance(self, state: int, token: int) -> int:
        """`next` for a token the mask allowed (a disallowed one is a bug, not an input error)."""
        nxt = self.next(state, token)
        assert nxt >= 0, f"token {token} is not allowed by the constraint in state {state}"
        return nxt

    def is_accepting(self, state: int) -> bool:
        return bool(self._host("accepting")[state])

    def is_done(self, state: int) -> bool:
        return bool(self._host("done")[state])

    def forced_token(self, state: int) -> int:
        return int(self._host("forced")[state])

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


def compact_rows(rows_t: list[np.ndarray], rows_n: list[np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full per-state transition rows (sorted tokens, their next states) -> default-next-state
    form: default [S] (the most common next state of the row, the smallest on a tie; -1 for an
    empty row), exc_ptr [S + 1], exc_tokens and exc_next [max(E, 1)] (the rest, sorted per
    state; one unused entry (0, -1) when there is none, so that no device table is empty)."""
    default = np.full(len(rows_t), -1, dtype=np.int64)
    exc_t, exc_n = [], []
    for i, (t, n) in enumerate(zip(rows_t, rows_n, strict=True)):
        if n.size:
            values, counts = np.unique(n, return_counts=True)
            default[i] = values[np.argmax(counts)]
        keep = n != default[i]
        exc_t.append(t[keep])
        exc_n.append(n[keep])
    lens = np.array([len(r) for r in exc_t], dtype=np.int64)
    exc_ptr = np.concatenate([[0], np.cumsum(lens)])
    exc_tokens = np.concatenate([*exc_t, np.zeros(1, np.int64)])
    exc_next = np.concatenate([*exc_n, np.full(1, -1, np.int64)])
    if exc_ptr[-1]:  # the padding entry only when there is no exception
        exc_tokens, exc_next = exc_tokens[:-1], exc_next[:-1]
    return default, exc_ptr, exc_tokens, exc_next


def index_graph(index: Any, sentinel: int, skip: tuple[int, ...] = ()
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The real part of an outlines-core Index built for `(?:R)S` (S: the end sentinel, token id
    `sentinel`). Returns states (outlines-core's id of each of ours; ours are 0..S-1, 0 the
    start), the transitions as flat arrays src, token, dst (in no order; `skip` ids and the
    sentinel left out) and accepting [S] (the sentinel leads to a final state: the text so far
    is in R; R itself may read S as a character, as `[^"]` does). Kept: the states reachable
    from the start without the sentinel from which an accepting state is reachable (a trim:
    ordinary tokens can spell the sentinel's bytes, a path that nothing completes). When
    nothing is accepted, state 0 alone and no transition.

    Why the sentinel: outlines-core (0.2.14) drops a token out of a state whose text is in R
    into one whose text is not (x(?:ab)*: no `a` after `x`), and its leftmost-first DFA loses
    the longer alternatives once a shorter one matched (alpha|alphabet). Only the states after
    S are final in `(?:R)S`, and the ordinary tokens never reach them (or are trimmed there).
    One remnant: where R itself reads U+10FFFD and could end just before it, the state after
    ordinary tokens spelling it keeps only part of its steps (never a text outside R)."""
    trans: dict[int, dict[int, int]] = index.get_transitions()
    s0 = index.get_initial_state()
    finals = np.array(sorted(index.get_final_states()), dtype=np.int64)
    dicts = list(trans.values())
    lens = np.fromiter(map(len, dicts), np.int64, len(dicts))
    total = int(lens.sum())
    tok = np.fromiter(chain.from_iterable(dicts), np.int64, total)
    nxt = np.fromiter(chain.from_iterable(d.values() for d in dicts), np.int64, total)
    frm = np.repeat(np.fromiter(trans.keys(), np.int64, len(dicts)), lens)
    ids = np.unique(np.concatenate([[s0], frm, nxt]))  # every state the Index names
    N = len(ids)
    src, dst = np.searchsorted(ids, frm), np.searchsorted(ids, nxt)
    accepting = np.zeros(N, dtype=bool)
    end = tok == sentinel
    accepting[src[end]] = np.isin(nxt[end], finals)  # text + S in R + S: text in R
    keep = ~np.isin(tok, np.array([*skip, sentinel], dtype=np.int64))
    src, tok, dst = src[keep], tok[keep], dst[keep]
    edges = np.unique(src * N + dst)  # the state graph: (from, to) pairs, sorted by from
    e_from, e_to = edges // N, edges % N
    fwd = np.searchsorted(e_from, np.arange(N + 1))
    by_to = np.argsort(e_to, kind="stable")
    bwd, e_back = np.searchsorted(e_to[by_to], np.arange(N + 1)), e_from[by_to]

    def closure(marked: np.ndarray, ptr: np.ndarray, to: np.ndarray) -> np.ndarray:
        todo = np.flatnonzero(marked).tolist()
        while todo:
            i = todo.pop()
            nb = to[ptr[i]:ptr[i + 1]]
            nb = nb[~marked[nb]]
            marked[nb] = True
            todo.extend(nb.tolist())
        return marked

    i0 = int(np.searchsorted(ids, s0))
    seen = closure(np.arange(N) == i0, fwd, e_to)  # reachable without the sentinel
    live = closure(accepting & seen, bwd, e_back) & seen  # an accepting state is reachable
    order = np.concatenate([[i0], np.flatnonzero(live & (np.arange(N) != i0))])
    new_id = np.full(N, -1, dtype=np.int64)
    new_id[order] = np.arange(len(order))
    src, dst = new_id[src], new_id[dst]
    keep = (src >= 0) & (dst >= 0)
    return ids[order], src[keep], tok[keep], dst[keep], accepting[order] & live[order]


def from_index(index: Any, eos_ids: tuple[int, ...], vocab_size: int,
               sentinel: int) -> TokenAutomaton:
    """Tables from an outlines-core Index of `(?:R)S` over a vocabulary without special tokens
    and with the end sentinel S as token `sentinel` (see `index_graph`): EOS takes the
    sentinel's place, allowed exactly in the accepting states (a loop)."""
    eos = np.array(sorted(set(eos_ids)), dtype=np.int64)
    states, src, tok, dst, accepting = index_graph(index, sentinel, tuple(eos.tolist()))
    S = len(states)
    acc = np.flatnonzero(accepting)
    src = np.concatenate([src, np.repeat(acc, len(eos))])
    tok = np.concatenate([tok, np.tile(eos, len(acc))])
    dst = np.concatenate([dst, np.repeat(acc, len(eos))])
    o = np.argsort(src * (int(tok.max(initial=0)) + 1) + tok)  # by state, then token (unique)
    cuts = np.cumsum(np.bincount(src, minlength=S))[:-1]
    rows_t, rows_n = np.split(tok[o], cuts), np.split(dst[o], cuts)
    lens = np.array([len(r) for r in rows_t], dtype=np.int64)
    tokens = np.concatenate(rows_t) if rows_t else np.zeros(0, np.int64)
    W = (vocab_size + 31) // 32
    assert tokens.size == 0 or tokens.max() < W * 32, "a token id is beyond the vocabulary"
    state_of = np.repeat(np.arange(S), lens)
    flat = state_of * W + (tokens >> 5)
    words = np.bincount(flat, weights=(1 << (tokens & 31)).astype(np.float64), minlength=S * W)
    bitmask = words.astype(np.uint32).view(np.int32).reshape(S, W)  # bits are distinct: sum = or
    default, exc_ptr, exc_tokens, exc_next = compact_rows(rows_t, rows_n)
    max_exc = int(np.diff(exc_ptr).max()) if S else 0
    done = np.array([r.size > 0 and np.isin(r, eos).all() for r in rows_t])
    forced = np.array([int(r[0]) if r.size == 1 else -1 for r in rows_t], dtype=np.int64)
    i32 = torch.int32
    return TokenAutomaton(
        bitmask=torch.from_numpy(bitmask.copy()), default=torch.from_numpy(default).to(i32),
        exc_ptr=torch.from_numpy(exc_ptr).to(i32), exc_tokens=torch.from_numpy(exc_tokens).to(i32),
        exc_next=torch.from_numpy(exc_next).to(i32), accepting=torch.from_numpy(accepting),
        done=torch.from_numpy(done), forced=torch.from_numpy(forced).to(i32),
        eos_ids=tuple(int(e) for e in eos), vocab_size=vocab_size, max_exc=max_exc,
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
