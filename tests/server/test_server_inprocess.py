"""In process (no socket): streaming as produced, cancellation, FIFO under concurrency,
timeouts, and the same app over HTTP giving the same answers."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import openai
import pytest

import agentfast
from agentfast.server import create_app
from agentfast.server.inprocess import ASGIStreamTransport, http_client

pytestmark = pytest.mark.anyio

PROMPTS = ["Read src/main.py", "def add(a, b):", "The capital of France", "Agents call tools",
           "0123456789", "The quick brown fox"]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def metric(text: str, name: str) -> float:
    m = re.search(rf"^agentfast_{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_lazy_exports_do_not_import_the_server():
    import subprocess
    import sys

    code = ("import sys, agentfast; assert 'fastapi' not in sys.modules; "
            "assert callable(agentfast.AsyncOpenAI) and 'fastapi' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_first_token_arrives_before_the_end(app):
    client = agentfast.AsyncOpenAI(app=app)
    t0 = time.perf_counter()
    times = []
    stream = await client.completions.create(model="tiny", prompt="The", max_tokens=300,
                                             temperature=0, stream=True)
    async for c in stream:
        if c.choices and c.choices[0].text:
            times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t0
    assert len(times) > 20
    assert times[0] < total / 2 and times[0] < times[-1]


async def test_openai_client_with_our_http_client_matches_http(app, client):
    oc = openai.AsyncOpenAI(base_url="http://x/v1", api_key="x", http_client=http_client(app),
                            max_retries=0)
    kw = dict(model="tiny", messages=ask("The capital of France"), max_tokens=10, temperature=0)
    local = (await oc.chat.completions.create(**kw)).choices[0].message.content
    assert local == client.chat.completions.create(**kw).choices[0].message.content


def test_sync_in_process_client(app):
    client = agentfast.OpenAI(app=app)
    s = client.chat.completions.create(model="tiny", messages=ask("hi"), max_tokens=8,
                                       temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    r = client.chat.completions.create(model="tiny", messages=ask("hi"), max_tokens=8,
                                       temperature=0)
    assert streamed == r.choices[0].message.content


async def test_closing_a_stream_cancels_the_generation(app, base_url):
    client = agentfast.AsyncOpenAI(app=app)
    root = httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url="http://x")
    before = metric((await root.get("/metrics")).text, "requests_cancelled_total")
    stream = await client.chat.completions.create(model="tiny", messages=ask("cancel me"),
                                                  max_tokens=1500, temperature=0, stream=True)
    n = 0
    async for _ in stream:
        n += 1
        if n == 3:
            break
    await stream.close()
    for _ in range(200):
        text = (await root.get("/metrics")).text
        if metric(text, "requests_cancelled_total") > before:
            break
        await asyncio.sleep(0.02)
    assert metric(text, "requests_cancelled_total") == before + 1
    assert metric(text, "running_requests") == 0
    r = await client.chat.completions.create(model="tiny", messages=ask("next"), max_tokens=4,
                                             temperature=0)
    assert r.choices[0].message.content is not None


def test_disconnect_over_http_cancels_too(client, base_url):
    root = base_url.removesuffix("/v1")
    before = metric(httpx.get(f"{root}/metrics").text, "requests_cancelled_total")
    with httpx.stream("POST", base_url + "/chat/completions", json={
            "model": "tiny", "messages": ask("cancel me"), "max_tokens": 1500,
            "temperature": 0, "stream": True}) as r:
        next(r.iter_lines())
    for _ in range(200):
        after = metric(httpx.get(f"{root}/metrics").text, "requests_cancelled_total")
        if after > before:
            break
        time.sleep(0.02)
    assert after == before + 1
    with pytest.raises(httpx.ReadTimeout):  # a non-stream request whose client gives up
        httpx.post(base_url + "/chat/completions", timeout=0.1, json={
            "model": "tiny", "messages": ask("cancel me too"), "max_tokens": 1500,
            "temperature": 0})
    for _ in range(200):
        if metric(httpx.get(f"{root}/metrics").text, "requests_cancelled_total") > after:
            break
        time.sleep(0.02)
    assert metric(httpx.get(f"{root}/metrics").text, "requests_cancelled_total") == after + 1
    assert client.chat.completions.create(model="tiny", messages=ask("x"), max_tokens=2,
                                          temperature=0).choices


async def test_concurrent_clients_get_their_own_answers(base_url, app):
    kw = dict(model="tiny", max_tokens=24, temperature=0)
    seq_client = agentfast.AsyncOpenAI(app=app)
    sequential = [(await seq_client.chat.completions.create(messages=ask(p), **kw))
                  .choices[0].message.content for p in PROMPTS]

    async def one(p: str, stream: bool) -> str:
        # closed here: a client left open is collected in a later test's loop and fails it
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as c:
            if not stream:
                r = await c.chat.completions.create(messages=ask(p), **kw)
                return r.choices[0].message.content
            s = await c.chat.completions.create(messages=ask(p), stream=True, **kw)
            return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])

    together = await asyncio.gather(*(one(p, i % 2 == 0) for i, p in enumerate(PROMPTS)))
    assert list(together) == sequential


async def test_request_timeout(tiny_engine):
    app = create_app(tiny_engine, model_name="tiny", request_timeout=0.05)
    client = agentfast.AsyncOpenAI(app=app)
    with pytest.raises(openai.APIStatusError) as e:
        await client.chat.completions.create(model="tiny", messages=ask("slow"),
                                             max_tokens=1500, temperature=0)
    assert e.value.status_code == 408 and e.value.code == "request_timeout"
    stream = await client.chat.completions.create(model="tiny", messages=ask("slow"),
                                                  max_tokens=1500, temperature=0, stream=True)
    with pytest.raises(openai.APIError, match="timeout"):
        async for _ in stream:
            pass


async def test_fifo_one_at_a_time(tiny_engine):
    from agentfast.engine import SamplingParams
    from agentfast.server.scheduler import Done, Work, scheduler_for

    sched = scheduler_for(tiny_engine)
    tok = tiny_engine.tokenizer
    jobs = [sched.submit(Work(tok.encode(p), SamplingParams(max_tokens=30, ignore_eos=True),
                              f"fifo-{i}"), timeout=60) for i, p in enumerate(PROMPTS[:4])]
    assert sched.metrics.queued + sched.metrics.running >= 3  # waiting in line
    order: list[int] = []

    async def drain(i, job):
        async for ev in job.events():
            if isinstance(ev, Done):
                order.append(i)

    await asyncio.gather(*(drain(i, j) for i, j in reversed(list(enumerate(jobs)))))
    assert order == [0, 1, 2, 3]


async def test_event_loop_stays_responsive_while_generating(app):
    client = agentfast.AsyncOpenAI(app=app)
    root = httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url="http://x")
    stream = await client.chat.completions.create(model="tiny", messages=ask("long one"),
                                                  max_tokens=1500, temperature=0, stream=True)
    t0 = time.perf_counter()
    health = (await root.get("/health")).json()
    assert time.perf_counter() - t0 < 0.5 and health["running"] == 1
    await stream.close()
