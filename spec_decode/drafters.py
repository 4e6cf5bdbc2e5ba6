"""Drafters: propose the next k tokens of a sequence from its token history (host side).

A drafter knows token ids (an MTP drafter, mtp.py, also reads the main model's hidden states).
It does not know the sampler or the constraint: the backend trims its proposals (automaton, stop
ids, budget) and verifies them with the target.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .policy import DraftPolicy


class Drafter:
    """One interface, several drafters (n-gram lookup; MTP modules in mtp.py; a draft model in
    draft_model.py).

    Counts what was drafted and accepted (`observe`), so callers can report the mean accepted
    drafts per verification step. `policy` (policy.DraftPolicy) picks the draft length per step
    and switches drafting off when it does not pay; the backend makes one on first use (from
    its step costs and `draft_cost`) and it persists across sequences."""

    # True: propose() reads the main model's final hidden states (MTP), from the KV cache the
    # backend hands over with bind() before decoding a sequence.
    needs_hidden = False
    # Cost of drafting one token, in plain 1-position target steps (0: a lookup on the host).
    draft_cost = 0.0

    def __init__(self) -> None:
        self.steps = 0  # verification steps that carried at least one draft
        self.drafted = 0
        self.accepted = 0
        # steps a backend's switching kernel ran, by positions per step (observe_counts)
        self.widths: dict[int, int] = {}
        self.policy: DraftPolicy | None = None

    def propose(self, history: list[int], k: int) -> list[int]:
        """Up to k guessed tokens following `history` (the whole sequence so far)."""
        raise NotImplementedError

    def begin(self, history: list[int]) -> None:
        """A sequence is about to be decoded after `history` (its prompt: the conversation so
        far); the engine calls this before the backend's first proposal."""

    def bind(self, cache) -> None:
        """The backend's per-sequence state (its KV cache) for the sequence about to decode
        (called before every decode; drafters with their own per-sequence state key it on
        this)."""

    def observe(self, drafted: list[int], accepted: int) -> None:
        """The backend verified `drafted`; its first `accepted` tokens were kept."""
        if drafted:
            self.steps += 1
            self.drafted += len(drafted)
            self.accepted += accepted

    def observe_counts(self, steps: int, drafted: int, accepted: int,
                       widths: dict[int, int] | None = None) -> None:
        """Counts of steps verified elsewhere (a backend that drafts by this drafter's rule on
        the device): `steps` steps carried `drafted` drafts, `accepted` of them were kept;
        `widths`: the steps its kernel ran, by positions per step (one-position steps too)."""
        self.steps += steps
        self.drafted += drafted
        self.accepted += accepted
        self.widths = dict(Counter(self.widths) + Counter(widths or {}))

    @property
    def mean_accepted(self) -> float:
        """Accepted drafts per verification step (the bonus token not counted)."""
        return self.accepted / self.steps if self.steps else 0.0


class NgramDrafter(Drafter):
    """Suffix lookup over the history: find the longest suffix (max_ngram down to min_ngram
    tokens) that occurred earlier, most recent occurrence first, and propose what followed it.
    Agent loops copy from tool outputs and code, so this is the cheapest big win.

    With a `tokenizer`, the lookup also searches a JSON-escaped copy of each prompt (`view`,
    made by `begin` and searched before the history): agents write files as JSON string
    arguments ("content": "import json\\nfrom ..."), where the newlines, quotes and backslashes
    of the text they copy are escaped, so the copy's tokens are not those of the tool output
    it copies (forced replay of spec_decode/traces/edit_file.json: 1.73 -> 2.29 tokens per
    forward; the other traces unchanged). The view grows with an append-only conversation
    (only the new part is escaped) and keeps its last `max_view` tokens.

    `on_device`: a backend that runs this same lookup inside its decode kernel (the monokernel:
    kernels/monokernel/ops_sample.draft_next) may do so, many speculative steps per launch with
    no host round trip, over `corpus(history)`; False keeps it on the host (one verification
    step per launch)."""

    def __init__(self, max_ngram: int = 8, min_ngram: int = 1, on_device: bool = True,
                 tokenizer: Any = None, max_view: int = 8192):
        super().__init__()
        assert 1 <= min_ngram <= max_ngram, f"bad n-gram range {min_ngram}..{max_ngram}"
        assert max_view >= 0, f"max_view must be >= 0 (0: no escaped view), got {max_view}"
        self.max_ngram, self.min_ngram, self.on_device = max_ngram, min_ngram, on_device
        self.tokenizer, self.max_view = tokenizer, max_view
        self.view: list[int] = []  # the escaped copy of the prompts seen (tokens)
        self._seen: list[int] = []  # the history the view covers

    def begin(self, history: list[int]) -> None:
        if self.tokenizer is None or self.max_view == 0:
            return
        n = len(self._seen)
        if len(history) >= n and history[:n] == self._seen:
            new = history[n:]  # the conversation grew: escape the new part only
        else:
            new, self.view = history, []
        if new:
            text = self.tokenizer.decode(new, skip_special=False)
            escaped = json.dumps(text, ensure_ascii=False)[1:-1]
            if escaped != text:  # (nothing to escape: the history has it as it is)
                self.view = (self.view + self.tokenizer.encode(escaped, add_special=False))[
                    -self.max_view:]
        self._seen = list(history)

    def corpus(self, history: list[int], size: int | None = None) -> list[int]:
        """What the lookup searches: the escaped view, then the history; with `size`, only as
        much of the view (its end) as fits beside the history in `size` tokens."""
        view = self.view
        if size is not None:
            view = view[max(0, len(view) - (size - len(history))):] if size > len(history) else []
        return view + history if view else history

    def propose(self, history: list[int], k: int) -> list[int]:
        if k <= 0 or len(history) <= self.min_ngram:
            return []
        seq, n, e = self.match(history)
        return seq[e + 1:e + 1 + k] if n else []

    def match(self, history: list[int]) -> tuple[list[int], int, int]:
        """(the corpus searched, n, e): the lookup's match, the longest suffix of the corpus
        (max_ngram down to min_ngram tokens) that also ends earlier, at e, with a token after
        it, the latest such end; n = 0 and e = -1 when there is none."""
        seq = self.corpus(history)
        return (seq, *suffix_match(seq, self.min_ngram, self.max_ngram))


def suffix_match(seq: list[int], min_n: int, max_n: int) -> tuple[int, int]:
    """(n, e): the longest suffix of `seq`, max_n down to min_n tokens, that also ends earlier
    at e with a token after it (e <= len - 2), the latest such e; (0, -1) when none. The rule of
    kernels/monokernel/sampling.ngram_match (the device lookup's oracle), in one pass over the
    earlier occurrences of the last token instead of a scan per suffix length: on the host it
    runs before every launch of the device drafter (with its confidence, on a 2-core VM for the
    edit traces' 87-699 token corpora: 0.10-0.67 ms scanned per length and twice, 4-17 us now;
    bench/results/host-cpu-20261201-s20)."""
    size = len(seq)
    if size <= min_n:
        return 0, -1
    top = min(max_n, size - 1)
    last = seq[-1]
    ends, i = [], -1
    try:
        while True:  # every earlier occurrence of the last token (a C-level scan)
            i = seq.index(last, i + 1, size - 1)
            ends.append(i)
    except ValueError:
        pass
    best_n, best_e = 0, -1
    for e in reversed(ends):  # latest first: an earlier end wins only by a longer match
        n = 1
        lim = min(top, e + 1)
        while n < lim and seq[e - n] == seq[size - 1 - n]:
            n += 1
        if n > best_n:
            best_n, best_e = n, e
            if n == top:
                break
    return (best_n, best_e) if best_n >= min_n else (0, -1)
