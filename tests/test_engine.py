"""Generation loop: sessions and prefix reuse, stop strings and tokens, sampling, streaming."""

from __future__ import annotations

import pytest
import torch

from agentfast.engine import ContextLengthError, Engine, SamplingParams
from agentfast.engine.errors import RequestError
from agentfast.engine.sampling import filtered_probs
from agentfast.engine.stops import StopMatcher
from agentfast.engine.tokenizer import IncrementalDecoder


@pytest.fixture(scope="module")
def eng(llama_dir) -> Engine:
    return Engine.load(str(llama_dir), device="cpu")


def test_prefix_reuse_equals_cold_run(eng):
    turn1 = [{"role": "user", "content": "Read the file src/main.py"}]
    p = SamplingParams(max_tokens=12, ignore_eos=True)
    r1 = eng.chat(turn1, p, session="s")
    assert (r1.reused_tokens, r1.prefilled_tokens) == (0, r1.prompt_tokens)
    turn2 = turn1 + [{"role": "assistant", "content": r1.text},
                     {"role": "user", "content": "Now write it back with an edit."}]
    warm = eng.chat(turn2, p, session="s")
    cold = eng.chat(turn2, p)  # no session: nothing reused
    assert cold.reused_tokens == 0
    assert warm.reused_tokens > r1.prompt_tokens // 2
    assert warm.reused_tokens + warm.prefilled_tokens == warm.prompt_tokens == cold.prompt_tokens
    assert warm.token_ids == cold.token_ids
    # The same prompt again: all but the last token reused, same output.
    again = eng.chat(turn2, p, session="s")
    assert again.prefilled_tokens == 1 and again.token_ids == cold.token_ids


def test_diverging_prompt_reuses_only_common_prefix(eng):
    p = SamplingParams(max_tokens=5, ignore_eos=True)
    a = eng.tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    b = a[:6] + eng.tokenizer.encode(" Paris is the capital")
    eng.generate(a, p, session="d")
    r = eng.generate(b, p, session="d")
    assert r.reused_tokens == 6
    assert r.token_ids == eng.generate(b, p).token_ids


def test_max_tokens_and_stop_token(eng):
    ids = eng.tokenizer.encode("def add(a, b):")
    free = eng.generate(ids, SamplingParams(max_tokens=10, ignore_eos=True))
    assert len(free.token_ids) == 10 and free.finish_reason == "length"
    stop_tok = free.token_ids[3]
    first = free.token_ids.index(stop_tok)
    r = eng.generate(ids, SamplingParams(max_tokens=10, stop_token_ids=(stop_tok,),
                                         ignore_eos=True))
    assert r.finish_reason == "stop" and r.stop == stop_tok
    assert r.token_ids == free.token_ids[:first]


def test_stop_string_cuts_text(eng):
    ids = eng.tokenizer.encode("def add(a, b):")
    free = eng.generate(ids, SamplingParams(max_tokens=16, ignore_eos=True))
    assert len(free.text) > 6
    stop = free.text[3:6]
    r = eng.generate(ids, SamplingParams(max_tokens=16, stop=(stop,), ignore_eos=True))
    assert r.finish_reason == "stop" and r.stop == stop
    assert r.text == free.text[: free.text.index(stop)]
    # Streamed chunks add up to the same text.
    g = eng.stream(ids, SamplingParams(max_tokens=16, stop=(stop,), ignore_eos=True))
    assert "".join(c.text for c in g) == r.text


def test_seeded_sampling_reproducible(eng):
    ids = eng.tokenizer.encode("Agents call tools")
    p = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=7,
                       ignore_eos=True)
    a, b = eng.generate(ids, p), eng.generate(ids, p)
    assert a.token_ids == b.token_ids
    c = eng.generate(ids, SamplingParams(max_tokens=20, temperature=1.0, seed=8, ignore_eos=True))
    assert c.token_ids != a.token_ids
    greedy = eng.generate(ids, SamplingParams(max_tokens=20, ignore_eos=True))
    topk1 = eng.generate(ids, SamplingParams(max_tokens=20, temperature=0.7, top_k=1, seed=1,
                                             ignore_eos=True))
    assert topk1.token_ids == greedy.token_ids


def test_filtered_probs_top_k_top_p():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    p = filtered_probs(logits, SamplingParams(temperature=1.0, top_k=3))
    assert (p[3:] == 0).all() and torch.isclose(p.sum(), torch.tensor(1.0))
    full = torch.softmax(logits, -1)  # 0.636, 0.234, 0.086, ...
    p = filtered_probs(logits, SamplingParams(temperature=1.0, top_p=0.8))
    assert (p[2:] == 0).all()  # 0.636 < 0.8 <= 0.870: two tokens kept
    torch.testing.assert_close(p[:2], full[:2] / full[:2].sum())


def test_cancel_stops_generation(eng):
    g = eng.stream(eng.tokenizer.encode("hello"), SamplingParams(max_tokens=50, ignore_eos=True))
    it = iter(g)
    next(it), next(it)
    g.close()
    assert g.result.finish_reason == "cancelled" and len(g.result.token_ids) == 2


def test_incremental_decoder_multibyte(eng):
    tok = eng.tokenizer
    text = "naïve café → 日本語 🙂 done"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_matcher_holds_back_partial():
    m = StopMatcher(("</end>",))
    assert m.push("abc</e") == "abc"
    assert m.push("nd>tail") == ""
    assert m.stopped == "</end>" and m.text == "abc"
    m = StopMatcher(("XY",))
    assert m.push("aX") == "a" and m.push("b") == "Xb" and m.flush() == ""


def test_context_and_param_errors(eng):
    with pytest.raises(ContextLengthError, match="512"):
        eng.generate([5] * 600)
    with pytest.raises(ContextLengthError, match="empty"):
        eng.generate([])
    with pytest.raises(RequestError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(RequestError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_generation_clamped_to_context(eng):
    r = eng.generate([5] * 500, SamplingParams(max_tokens=100, ignore_eos=True))
    assert len(r.token_ids) == 12 and r.finish_reason == "length"
