"""The n-gram drafter's proposals on hand-made histories, and the drafters' counters."""

from __future__ import annotations

from agentfast.spec_decode import NgramDrafter


def test_longest_suffix_wins_most_recent_first():
    d = NgramDrafter(max_ngram=4)
    # suffix [1, 2] occurs at 0 (-> 3) and, longer, [9, 1, 2] at 4 (-> 7, 8)
    h = [1, 2, 3, 5, 9, 1, 2, 7, 8, 6, 9, 1, 2]
    assert d.propose(h, 2) == [7, 8]
    assert d.propose(h, 10) == [7, 8, 6, 9, 1, 2]  # up to k, stops at the history's end
    assert d.propose([4, 1, 2, 3, 5, 1, 2, 6, 1, 2], 1) == [6]  # most recent match of [1, 2]


def test_no_match_and_edge_cases():
    d = NgramDrafter()
    assert d.propose([], 4) == []
    assert d.propose([5], 4) == []
    assert d.propose([1, 2, 3, 4], 4) == []  # no suffix occurs earlier
    assert d.propose([1, 2, 1], 0) == []
    assert d.propose([7, 7], 3) == [7]  # a run: the continuation overlaps the suffix
    assert d.propose([7, 7, 7, 7], 3) == [7]


def test_min_ngram_and_copy_of_a_tool_output():
    assert NgramDrafter(min_ngram=2).propose([1, 2, 3, 9, 3], 2) == []  # only a 1-gram matches
    assert NgramDrafter(min_ngram=1).propose([1, 2, 3, 9, 3], 2) == [9, 3]
    tool = list(range(100, 140))
    h = [1, 2] + tool + [3, 4] + tool[:5]  # the model starts copying the tool output
    assert NgramDrafter().propose(h, 6) == tool[5:11]


def test_observe_counts_verification_steps():
    d = NgramDrafter()
    d.observe([1, 2, 3], 2)
    d.observe([], 0)  # a plain step is not a verification step
    d.observe([4], 0)
    assert (d.steps, d.drafted, d.accepted, d.mean_accepted) == (2, 4, 2, 1.0)
