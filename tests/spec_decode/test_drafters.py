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


def test_suffix_match_is_the_device_lookups_rule():
    """The host's one-pass lookup (drafters.suffix_match, what propose and the monokernel's
    first-step confidence run) against the scan per suffix length that mirrors the kernel's
    lookup (kernels/monokernel/sampling.ngram_match), on random histories over small and large
    vocabularies (long runs of repeats, no match at all) and every n-gram range."""
    import random

    from agentfast.kernels.monokernel.sampling import ngram_match
    from agentfast.spec_decode.drafters import suffix_match

    rng = random.Random(0)
    found = 0
    for trial in range(3000):
        vocab = rng.choice([1, 2, 3, 5, 50])
        seq = [rng.randrange(vocab) for _ in range(rng.randrange(0, 60))]
        if trial % 3 == 0 and len(seq) > 8:  # a copy of an earlier stretch at the end
            a = rng.randrange(len(seq) - 4)
            seq += seq[a:a + rng.randrange(1, 12)]
        lo = rng.randrange(1, 4)
        hi = lo + rng.randrange(0, 8)
        want = ngram_match(seq, lo, hi)
        assert suffix_match(seq, lo, hi) == want, (seq, lo, hi)
        found += want[0] > 0
    assert 1000 < found < 2900  # both outcomes exercised
    d = NgramDrafter(max_ngram=4)
    h = [1, 2, 3, 5, 9, 1, 2, 7, 8, 6, 9, 1, 2]
    assert d.match(h) == (h, 3, 6)


def test_observe_counts_verification_steps():
    d = NgramDrafter()
    d.observe([1, 2, 3], 2)
    d.observe([], 0)  # a plain step is not a verification step
    d.observe([4], 0)
    assert (d.steps, d.drafted, d.accepted, d.mean_accepted) == (2, 4, 2, 1.0)


def _tok():
    from tiny_models import embedded_engine_or_skip

    return embedded_engine_or_skip().tokenizer


def test_escaped_view_drafts_a_json_copy_of_a_tool_output():
    """An agent writing back a file it read (as a JSON string argument): the copy's escaped
    newlines and quotes are not in the history as tokens, but in the view begin() made."""
    tok = _tok()
    tool = 'x = 1\ny = "two"\n\n\ndef f(a, b):\n    return a + b\n'
    prompt = tok.encode("<tool_response>\n" + tool + "</tool_response>\n", add_special=False)
    out = tok.encode('{"name": "write_file", "arguments": {"content": "x = 1\\ny = \\"two',
                     add_special=False)
    want = tok.encode('{"content": "x = 1\\ny = \\"two\\"\\n\\n\\ndef f(a, b):',
                      add_special=False)[len(tok.encode('{"content": "x = 1\\ny = \\"two',
                                                        add_special=False)):]
    plain, viewed = NgramDrafter(), NgramDrafter(tokenizer=tok)
    for d in (plain, viewed):
        d.begin(prompt)
    assert plain.view == [] and viewed.view
    got = viewed.propose(prompt + out, 6)
    assert got and got == want[:len(got)], (tok.decode(got), tok.decode(want))
    assert tok.decode(got).startswith('\\"')  # the escaped quote, then the escaped newlines
    assert plain.propose(prompt + out, 6) != got  # the raw history continues differently
    assert viewed.corpus(prompt) == viewed.view + prompt and plain.corpus(prompt) is prompt


def test_escaped_view_grows_with_the_conversation_and_is_capped():
    tok = _tok()
    a = tok.encode('first "turn"\n', add_special=False)
    b = tok.encode('second\tturn\n', add_special=False)
    d = NgramDrafter(tokenizer=tok)
    d.begin(a)
    va = list(d.view)
    assert tok.decode(va) == 'first \\"turn\\"\\n'
    d.begin(a + b)  # the same conversation, grown: only the new part is escaped
    assert d.view[:len(va)] == va and tok.decode(d.view[len(va):]) == "second\\tturn\\n"
    d.begin(b)  # another conversation: started over
    assert tok.decode(d.view) == "second\\tturn\\n"
    d.begin(b + tok.encode("plain words", add_special=False))  # nothing to escape: no copy
    assert tok.decode(d.view) == "second\\tturn\\n"
    small = NgramDrafter(tokenizer=tok, max_view=3)
    small.begin(a + b)  # the last max_view tokens of the escaped copy
    whole = tok.encode(tok.decode(a + b).replace('"', '\\"').replace("\n", "\\n")
                       .replace("\t", "\\t"), add_special=False)
    assert small.view == whole[-3:]


def test_make_drafter_names():
    from tiny_models import embedded_engine_or_skip

    from agentfast.spec_decode.mtp import make_drafter

    eng = embedded_engine_or_skip()
    assert make_drafter("ngram", eng.model, eng.backend).tokenizer is eng.model.tokenizer
    assert make_drafter("ngram:noview", eng.model, eng.backend).tokenizer is None


def test_max_view_zero_keeps_no_view_and_negative_is_refused():
    import pytest

    tok = _tok()
    d = NgramDrafter(tokenizer=tok, max_view=0)
    d.begin(tok.encode('a "quoted"\nline', add_special=False))
    assert d.view == []
    with pytest.raises(AssertionError, match="max_view"):
        NgramDrafter(tokenizer=tok, max_view=-1)
    v = NgramDrafter(tokenizer=tok)
    v.begin(tok.encode('a "quoted"\nline', add_special=False))
    h = [1, 2, 3]
    assert v.corpus(h, len(h) + 2) == v.view[-2:] + h and v.corpus(h, len(h)) == h
