"""Logprobs come from the logits the decode step computed (`Engine.stream(..., logprobs=k)`):
they must equal log_softmax of the reference model's logits at each position, with no extra
forward pass; the server only reshapes them. The graph backend's device path is checked
against the reference on the GPU (marked `gpu`)."""

from __future__ import annotations

import os

import pytest
import torch

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.errors import RequestError

PROMPT = "Agents call tools, read files and write code"


def oracle(engine: Engine, prompt: list[int], out: list[int]) -> torch.Tensor:
    """log_softmax of a fresh full forward over prompt + output: row j scores out[j]."""
    cache = engine.backend.new_cache()
    logits = engine.backend.logits(cache, prompt + out[:-1], 0)  # [T, V]
    return torch.log_softmax(logits.float(), dim=-1)[len(prompt) - 1:]


def check_against_oracle(engine: Engine, prompt: list[int], r, k: int, atol: float) -> None:
    assert r.logprobs is not None and len(r.logprobs) == len(r.token_ids) > 0
    want = oracle(engine, prompt, r.token_ids)
    for j, lp in enumerate(r.logprobs):
        assert lp.token_id == r.token_ids[j]
        assert lp.logprob == pytest.approx(float(want[j, lp.token_id]), abs=atol)
        assert len(lp.top) == k
        vals = [v for _, v in lp.top]
        assert vals == sorted(vals, reverse=True)
        best = torch.topk(want[j], k)
        assert [v for _, v in lp.top] == pytest.approx(best.values.tolist(), abs=atol)
        for i, v in lp.top:  # ids may differ only on ties
            assert float(want[j, i]) == pytest.approx(v, abs=atol)


def counting_forwards(monkeypatch, engine: Engine) -> list[int]:
    calls: list[int] = []
    real = engine.backend.model.forward

    def forward(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(engine.backend.model, "forward", forward)
    return calls


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_reference_logprobs_equal_log_softmax_of_the_logits(tiny, monkeypatch, temperature):
    ids = tiny.tokenizer.encode(PROMPT)
    p = SamplingParams(max_tokens=12, temperature=temperature, seed=5, ignore_eos=True)
    plain = tiny.generate(ids, p)
    forwards = counting_forwards(monkeypatch, tiny)
    r = tiny.generate(ids, p, logprobs=5)
    n_with = len(forwards)
    forwards.clear()
    tiny.generate(ids, p)
    assert n_with == len(forwards)  # no extra forward for the logprobs
    assert r.token_ids == plain.token_ids  # asking for logprobs changes nothing else
    check_against_oracle(tiny, ids, r, 5, atol=1e-4)
    if temperature == 0:
        assert all(lp.top[0][1] == pytest.approx(lp.logprob) for lp in r.logprobs)


def test_stream_chunks_carry_their_tokens_logprobs(tiny):
    ids = tiny.tokenizer.encode(PROMPT)
    g = tiny.stream(ids, SamplingParams(max_tokens=10, ignore_eos=True), logprobs=0)
    chunks = list(g)
    assert all(len(c.logprobs) == len(c.token_ids) for c in chunks)
    assert [lp.token_id for c in chunks for lp in c.logprobs] == g.result.token_ids
    assert all(lp.top == () for c in chunks for lp in c.logprobs)
    assert [lp.logprob for c in chunks for lp in c.logprobs] == [
        lp.logprob for lp in g.result.logprobs]


def test_logprobs_under_a_constraint_are_of_the_raw_distribution(tiny, constraints):
    from agentfast.engine import constraints as C

    ids = tiny.tokenizer.encode(PROMPT)
    r = tiny.generate(ids, SamplingParams(max_tokens=40, constraint=C.choice(
        ["alpha", "beta", "gamma delta"])), logprobs=3)
    assert r.finish_reason == "stop" and r.text in ("alpha", "beta", "gamma delta")
    check_against_oracle(tiny, ids, r, 3, atol=1e-4)


def test_logprobs_with_speculative_decoding(llama_dir):
    from agentfast.spec_decode import NgramDrafter

    eng = Engine.load(str(llama_dir), device="cpu", drafter=NgramDrafter())
    ids = eng.tokenizer.encode("a b c a b c a b c a b c a b")
    r = eng.generate(ids, SamplingParams(max_tokens=24, ignore_eos=True), logprobs=2)
    check_against_oracle(eng, ids, r, 2, atol=1e-4)


def test_bad_logprobs_requests(tiny):
    with pytest.raises(RequestError, match="logprobs"):
        tiny.generate("x", SamplingParams(max_tokens=2), logprobs=21)
    tiny.backend.supports_logprobs = False  # an instance attribute: a backend without it
    try:
        with pytest.raises(RequestError, match="does not report logprobs"):
            tiny.generate("x", SamplingParams(max_tokens=2), logprobs=0)
    finally:
        del tiny.backend.supports_logprobs


def test_server_rejects_logprobs_on_a_backend_without_them(tiny_engine, base_url):
    import httpx

    tiny_engine.backend.supports_logprobs = False
    try:
        r = httpx.post(base_url + "/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "logprobs": True, "max_tokens": 2})
    finally:
        del tiny_engine.backend.supports_logprobs
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "logprobs" and err["code"] == "unsupported_value"


def test_server_logprobs_match_the_engine(client, tiny_engine):
    q = [{"role": "user", "content": "The capital of France is"}]
    r = client.chat.completions.create(model="tiny", messages=q, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=4)
    want = tiny_engine.generate(tiny_engine.encode_chat(q), SamplingParams(max_tokens=8),
                                logprobs=4)
    got = r.choices[0].logprobs.content
    assert [t.logprob for t in got] == pytest.approx([x.logprob for x in want.logprobs])
    tok = tiny_engine.tokenizer
    assert [[a.token for a in t.top_logprobs] for t in got] == [
        [tok.decode([i], skip_special=False) for i, _ in x.top] for x in want.logprobs]


cuda = pytest.mark.skipif(not torch.cuda.is_available()
                          or os.environ.get("TRITON_INTERPRET", "0") == "1",
                          reason="needs a CUDA GPU and TRITON_INTERPRET=0")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", ["greedy", "sampled", "constrained"])
def test_graph_logprobs_equal_the_reference(tmp_path, mode):
    from tiny_models import make_checkpoint

    folder = make_checkpoint(tmp_path / "llama", "llama", seed=0, hidden_size=256,
                             num_attention_heads=4)
    ref = Engine.load(str(folder), backend="reference", device="cuda", dtype=torch.float32)
    fast = Engine.load(str(folder), backend="graph", device="cuda", dtype=torch.float32)
    ids = ref.tokenizer.encode(PROMPT)
    kw: dict = {"max_tokens": 24, "ignore_eos": True}
    if mode == "sampled":
        kw.update(temperature=1.0, seed=3)
    if mode == "constrained":
        from agentfast.engine import constraints as C

        kw = {"max_tokens": 40, "constraint": C.choice(["alpha", "beta", "gamma delta"])}
    r = fast.generate(ids, SamplingParams(**kw), logprobs=5)
    again = fast.generate(ids, SamplingParams(**kw))  # without: the same tokens
    assert r.token_ids == again.token_ids
    check_against_oracle(ref, ids, r, 5, atol=2e-3)
