"""What the backends that take a drafter share: the draft inputs of a step (the drafter's
proposal trimmed by the constraint and the stop ids, forced tokens drafted for free) and the
drafter's DraftPolicy. Knows token ids and automata, not models or kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentfast.spec_decode import Drafter, DraftPolicy

    from ..constraints import TokenAutomaton

MAX_FORCED = 64  # forced tokens drafted past the drafter's proposal, per step


def draft_policy(backend: Any, drafter: Drafter) -> DraftPolicy:
    """The drafter's policy, kept by the drafter across sequences (made for `backend`'s step
    costs on first use; a duck-typed drafter without the attribute gets one per sequence)."""
    from agentfast.spec_decode import DraftPolicy

    policy = getattr(drafter, "policy", None)
    if policy is None:
        policy = DraftPolicy.for_backend(backend, drafter)
        if hasattr(drafter, "policy"):
            drafter.policy = policy
    return policy


def propose_drafts(drafter: Drafter, hist: list[int], k: int, room: int,
                   automaton: TokenAutomaton | None, state: int,
                   stop_ids: frozenset[int]) -> tuple[list[int], int]:
    """(drafts, how many of them are the drafter's). The drafter's proposal (at most k),
    cut at the first token the constraint rejects and after a token that ends the output
    (a stop id, or a constraint left with only EOS). Where the constraint forces a token
    (the only one allowed) that token is drafted, whatever the drafter guessed: it is
    accepted for sure, so forced tokens go on past k (up to `room` and MAX_FORCED) and a
    forced run (a key, a closing bracket) costs no extra step."""
    props = drafter.propose(hist, k)[:max(k, 0)]
    out: list[int] = []
    guessed = 0  # the drafter's proposals in `out` (a prefix)
    while len(out) < room:
        forced = automaton.forced_token(state) if automaton is not None else -1
        if guessed == len(out) and guessed < len(props) and forced in (-1, props[guessed]):
            d = props[guessed]
            guessed += 1
        elif forced >= 0 and len(out) - guessed < MAX_FORCED:
            d = forced  # (the drafter's later proposals followed its own guess: dropped)
        else:
            break
        if automaton is not None:
            state = automaton.next(state, d)
            if state < 0:
                guessed = min(guessed, len(out))
                break
        out.append(d)
        if d in stop_ids or (automaton is not None and automaton.is_done(state)):
            break
    return out, guessed
