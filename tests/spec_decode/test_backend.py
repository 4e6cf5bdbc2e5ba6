"""Speculative decode on the reference backend: greedy output equals plain decode token for
token (tiny random checkpoint and the embedded model), drafts get accepted on repetitive text,
constraints, stop ids and max_new are respected, and sampling stays reproducible by seed."""

from __future__ import annotations

import pytest

from agentfast.engine import Engine, SamplingParams
from agentfast.engine import constraints as C
from agentfast.spec_decode import NgramDrafter

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a + b\n\ndef add(",
    "0123456789 0123456789 0123456789 0123",
    "{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.py\"}}\n{\"name\": \"read_",
    "Agents call tools, read files, and write them back with an edit. Agents call tools, read",
    "a a a a a a a a a a",
    "Paris",
]


def decode(eng: Engine, text: str, params: SamplingParams, drafter=None, max_new: int = 40,
           stop_ids: frozenset[int] = frozenset(), automaton=None) -> list[int]:
    be = eng.backend
    ids = eng.tokenizer.encode(text)
    cache = be.new_cache()
    logits = be.prefill(cache, ids, 0)
    kw = {} if automaton is None else {"automaton": automaton}
    if drafter is not None:
        kw.update(drafter=drafter, history=ids)
    return list(be.decode(cache, logits, len(ids), params, stop_ids, max_new, **kw))


@pytest.mark.parametrize("text", PROMPTS)
@pytest.mark.parametrize("max_new", [1, 2, 37])
def test_greedy_equals_plain_decode(tiny, text, max_new):
    p = SamplingParams(temperature=0.0)
    d = NgramDrafter()
    assert decode(tiny, text, p, d, max_new) == decode(tiny, text, p, None, max_new)


def test_drafts_are_accepted_on_repetitive_text(tiny):
    d = NgramDrafter()
    out = decode(tiny, PROMPTS[2], SamplingParams(temperature=0.0), d, max_new=60)
    assert out == decode(tiny, PROMPTS[2], SamplingParams(temperature=0.0), None, max_new=60)
    assert d.steps > 0 and d.mean_accepted > 0, (d.steps, d.drafted, d.accepted)


def test_stop_ids_end_the_output(tiny):
    p = SamplingParams(temperature=0.0)
    plain = decode(tiny, PROMPTS[1], p, max_new=40)
    stop = plain[len(plain) // 2]
    want = plain[:plain.index(stop) + 1]
    got = decode(tiny, PROMPTS[1], p, NgramDrafter(), 40, frozenset({stop}))
    assert got == want == decode(tiny, PROMPTS[1], p, None, 40, frozenset({stop}))


def test_constrained_greedy_equals_plain(tiny):
    c = C.regex(r"(abc ){2,12}\.")
    auto = tiny._automaton(SamplingParams(constraint=c))
    eos = frozenset(auto.eos_ids)
    p = SamplingParams(temperature=0.0)
    d = NgramDrafter()
    plain = decode(tiny, PROMPTS[2], p, None, 60, eos, auto)
    assert decode(tiny, PROMPTS[2], p, d, 60, eos, auto) == plain
    assert plain[-1] in eos


@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_is_reproducible_and_valid(tiny, seed):
    p = SamplingParams(temperature=0.8, top_p=0.9, seed=seed)
    a = decode(tiny, PROMPTS[4], p, NgramDrafter(), 50)
    b = decode(tiny, PROMPTS[4], p, NgramDrafter(), 50)
    assert a == b and len(a) == 50


@pytest.mark.parametrize("text", ["def fib(n):\n    if n < 2:\n        return n\n    return fib(",
                                  "Copy this exactly: alpha beta gamma delta. Copy: alpha beta"])
def test_greedy_equals_plain_on_embedded_model(smol, text):
    p = SamplingParams(temperature=0.0)
    d = NgramDrafter()
    assert decode(smol, text, p, d, 30) == decode(smol, text, p, None, 30)
