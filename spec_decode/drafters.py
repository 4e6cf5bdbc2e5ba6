"""Drafters: propose the next k tokens of a sequence from its token history (host side).

A drafter knows token ids (an MTP drafter, mtp.py, also reads the main model's hidden states).
It does not know the sampler or the constraint: the backend trims its proposals (automaton, stop
ids, budget) and verifies them with the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        self.policy: DraftPolicy | None = None

    def propose(self, history: list[int], k: int) -> list[int]:
        """Up to k guessed tokens following `history` (the whole sequence so far)."""
        raise NotImplementedError

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

    def observe_counts(self, steps: int, drafted: int, accepted: int) -> None:
        """Counts of steps verified elsewhere (a backend that drafts by this drafter's rule on
        the device): `steps` steps carried `drafted` drafts, `accepted` of them were kept."""
        self.steps += steps
        self.drafted += drafted
        self.accepted += accepted

    @property
    def mean_accepted(self) -> float:
        """Accepted drafts per verification step (the bonus token not counted)."""
        return self.accepted / self.steps if self.steps else 0.0


class NgramDrafter(Drafter):
    """Suffix lookup over the history: find the longest suffix (max_ngram down to min_ngram
    tokens) that occurred earlier, most recent occurrence first, and propose what followed it.
    Agent loops copy from tool outputs and code, so this is the cheapest big win.

    `on_device`: a backend that runs this same lookup inside its decode kernel (the monokernel:
    kernels/monokernel/ops_sample.draft_next) may do so, many speculative steps per launch with
    no host round trip; False keeps it on the host (one verification step per launch)."""

    def __init__(self, max_ngram: int = 8, min_ngram: int = 1, on_device: bool = True):
        super().__init__()
        assert 1 <= min_ngram <= max_ngram, f"bad n-gram range {min_ngram}..{max_ngram}"
        self.max_ngram, self.min_ngram, self.on_device = max_ngram, min_ngram, on_device

    def propose(self, history: list[int], k: int) -> list[int]:
        size = len(history)
        if k <= 0 or size <= self.min_ngram:
            return []
        last = history[-1]
        for n in range(min(self.max_ngram, size - 1), self.min_ngram - 1, -1):
            suffix = history[size - n:]
            # An earlier occurrence history[i:i+n] with at least one token after it.
            for i in range(size - n - 1, -1, -1):
                if history[i + n - 1] == last and history[i:i + n] == suffix:
                    return history[i + n:i + n + k]
        return []
