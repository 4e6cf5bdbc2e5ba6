"""The direct path running the generation on the event loop's own thread (a backend whose
decode runs ahead of the host, an idle engine): the same turns as through the engine's worker
thread, cancellation, and the fallback to the worker when the engine is busy."""

from __future__ import annotations

import threading
from typing import Literal

import anyio
import pytest

from agentfast.agent import Agent, MaxTurnsExceeded, TextDelta, TurnFinished
from agentfast.agent.direct import EngineChat
from agentfast.server.scheduler import scheduler_for

pytestmark = pytest.mark.anyio


def lookup(key: Literal["color", "size"]) -> str:
    """Looks a key up."""
    return f"value of {key}"


def _agent(engine, inline: bool, **settings) -> Agent:
    agent = Agent(engine, tools=[lookup], max_turns=3, settings={
        "max_tokens": 120, "temperature": 0, "parallel_tool_calls": False, **settings})
    agent.engine_chat = EngineChat(engine, inline=inline)
    return agent


@pytest.fixture
def stream_threads(tiny_engine, monkeypatch):
    """The thread id of every engine.stream call."""
    seen: list[int] = []
    stream = tiny_engine.stream

    def spy(*a, **k):
        seen.append(threading.get_ident())
        return stream(*a, **k)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    return seen


def _plain(messages: list[dict]) -> list[dict]:
    """The messages without the (random) tool call ids."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if k != "tool_call_id"}
        if m.get("tool_calls"):
            m["tool_calls"] = [{k: v for k, v in c.items() if k != "id"} for c in m["tool_calls"]]
        out.append(m)
    return out


async def _given_back(sched) -> None:
    """The engine is free again: the worker releases it just after the stream's end, so
    hold() is polled (a few seconds at most) instead of racing that release."""
    with anyio.fail_after(5.0):
        while not sched.hold():
            await anyio.sleep(0.005)


async def _run(agent: Agent):
    try:
        return await agent.run("Look up 'a'.", first_tool_choice="required")
    except MaxTurnsExceeded as e:  # the random model keeps calling: compare anyway
        return e.result


async def test_inline_turns_equal_the_worker_turns(tiny_engine, stream_threads):
    loop_thread = threading.get_ident()
    sched = scheduler_for(tiny_engine)
    # the session's engine: an earlier test's worker may not have given it back yet (on a
    # loaded machine it then ran this test's first turn on the worker: CI, session 25)
    await _given_back(sched)
    sched.release()
    here = await _run(_agent(tiny_engine, inline=True))
    n = len(stream_threads)
    assert n >= 2 and all(t == loop_thread for t in stream_threads)
    worker = await _run(_agent(tiny_engine, inline=False))
    assert all(t != loop_thread for t in stream_threads[n:])
    assert _plain(here.messages) == _plain(worker.messages)
    assert [(t.prompt_tokens, t.cached_tokens, t.completion_tokens) for t in here.trace.turns] \
        == [(t.prompt_tokens, t.cached_tokens, t.completion_tokens) for t in worker.trace.turns]
    await _given_back(sched)  # the engine was given back
    sched.release()


async def test_inline_stop_cancels_and_frees_the_engine(tiny_engine, stream_threads):
    sched = scheduler_for(tiny_engine)
    metrics = sched.metrics
    before, tokens_before = metrics.generations["cancelled"], metrics.output_tokens
    agent = _agent(tiny_engine, inline=True, max_tokens=1500)
    agent.tools = {}
    agent.tool_specs = []
    run = agent.run_stream("Say many things.")
    async for ev in run:
        assert isinstance(ev, TextDelta)
        break
    await run.aclose()
    assert metrics.generations["cancelled"] == before + 1
    assert metrics.output_tokens - tokens_before < 200
    await _given_back(sched)
    sched.release()


async def test_busy_engine_falls_back_to_the_worker(tiny_engine, stream_threads):
    sched = scheduler_for(tiny_engine)
    assert sched.hold()  # someone else runs a generation here
    finished = anyio.Event()
    turns: list[TurnFinished] = []

    async def run():
        async for ev in _agent(tiny_engine, inline=True).run_stream(
                "Look up 'a'.", first_tool_choice="required"):
            if isinstance(ev, TurnFinished):
                turns.append(ev)
                break
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.3)
        assert not turns  # queued for the worker, which waits for the engine
        sched.release()
        with anyio.fail_after(60):
            await finished.wait()
    assert turns and stream_threads[0] != threading.get_ident()


def test_inline_by_default_only_where_decode_runs_ahead(tiny_engine, monkeypatch):
    """Default: inline on a backend whose decode runs ahead of the host (the monokernel), not on
    a host-paced one (reference, graph: the caller's per-token work would slow the decode), and
    not with a drafter (its host-side drafting paces the steps); an explicit choice wins."""
    from agentfast.engine.backends.graph import GraphBackend
    from agentfast.engine.backends.monokernel import MonokernelBackend
    from agentfast.engine.backends.reference import ReferenceBackend

    assert MonokernelBackend.runs_ahead and not GraphBackend.runs_ahead
    assert not ReferenceBackend.runs_ahead
    chat = EngineChat(tiny_engine)
    assert not chat._inline()  # the tiny engine runs the reference backend
    monkeypatch.setattr(type(tiny_engine.backend), "runs_ahead", True, raising=False)
    assert chat._inline()
    monkeypatch.setattr(tiny_engine, "drafter", object())
    assert not chat._inline()
    assert EngineChat(tiny_engine, inline=True)._inline()
