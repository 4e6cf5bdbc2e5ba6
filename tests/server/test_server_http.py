"""The official `openai` client over real HTTP (uvicorn on 127.0.0.1) against a tiny model."""

from __future__ import annotations

import re

import httpx

from agentfast.engine import SamplingParams

Q = [{"role": "user", "content": "The capital of France is"}]


def test_models_health_metrics(client, base_url):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    root = base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/health").json()["status"] == "ok"
    text = httpx.get(f"{root}/metrics").text
    for name in ("time_to_first_token_seconds_bucket", "time_per_output_token_seconds_count",
                 "decode_tokens_per_second", "prefix_reuse_ratio", "queue_depth",
                 "spec_decode_accepted_length 0"):
        assert f"agentfast_{name}" in text


def test_chat_equals_the_engine(client, tiny_engine):
    r = client.chat.completions.create(model="tiny", messages=Q, max_tokens=12, temperature=0)
    want = tiny_engine.chat(Q, SamplingParams(max_tokens=12))
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == {"stop": "stop", "length": "length"}[want.finish_reason]
    assert r.usage.prompt_tokens == want.prompt_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "tiny" and r.id.startswith("chatcmpl-")


def test_stream_equals_non_stream(client):
    kw = dict(model="tiny", messages=Q, max_tokens=20, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full and len(chunks) > 5
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_sampling_seed_stop_and_max_completion_tokens(client):
    kw = dict(model="tiny", messages=Q, max_completion_tokens=16, temperature=1.0, top_p=0.9)
    a = client.chat.completions.create(**kw, seed=7).choices[0].message.content
    b = client.chat.completions.create(**kw, seed=7).choices[0].message.content
    assert a == b
    greedy = client.chat.completions.create(model="tiny", messages=Q, max_tokens=16,
                                            temperature=0).choices[0].message.content
    stop = greedy.strip()[3:5]
    r = client.chat.completions.create(model="tiny", messages=Q, max_tokens=16, temperature=0,
                                       stop=[stop])
    assert r.choices[0].message.content == greedy[:greedy.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_multi_turn_reuses_the_cached_prefix(client):
    convo = [{"role": "system", "content": "multi-turn test"},
             {"role": "user", "content": "Read the file src/main.py"}]
    r1 = client.chat.completions.create(model="tiny", messages=convo, max_tokens=8,
                                        temperature=0)
    convo += [{"role": "assistant", "content": r1.choices[0].message.content},
              {"role": "user", "content": "Now write it back with an edit."}]
    r2 = client.chat.completions.create(model="tiny", messages=convo, max_tokens=8,
                                        temperature=0)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert r1.usage.prompt_tokens <= cached < r2.usage.prompt_tokens


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=Q, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens - (r.choices[0].finish_reason == "stop")
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4  # greedy takes the best
    s = client.chat.completions.create(model="tiny", messages=Q, max_tokens=6, temperature=0,
                                       logprobs=True, stream=True)
    streamed = [t.logprob for c in s if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    assert streamed == [t.logprob for t in content]


def test_completions(client, tiny_engine):
    r = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=10,
                                  temperature=0, logprobs=2)
    assert r.choices[0].text == tiny_engine.generate("def add(a, b):", SamplingParams(10)).text
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens
    s = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=10,
                                  temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in s) == r.choices[0].text


def test_responses(client):
    r = client.responses.create(model="tiny", input="The capital of France is",
                                instructions="Answer.", max_output_tokens=10, temperature=0)
    assert r.status in ("completed", "incomplete") and r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    events = list(client.responses.create(model="tiny", input="The capital of France is",
                                          instructions="Answer.", max_output_tokens=10,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_metrics_count_what_happened(client, base_url):
    root = base_url.removesuffix("/v1")
    client.chat.completions.create(model="tiny", messages=Q, max_tokens=4, temperature=0)
    text = httpx.get(f"{root}/metrics").text
    n = int(re.search(r'http_requests_total\{path="/v1/chat/completions",status="200"\} (\d+)',
                      text).group(1))
    assert n >= 1
    assert float(re.search(r"agentfast_generation_tokens_total (\d+)", text).group(1)) > 0
