"""The agent on a real engine behind the in-process client: a tiny random checkpoint for the
mechanics (a forced strict tool call, the session's KV reused on turn 2) and the embedded model
for one run end to end."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest

import agentfast
from agentfast.agent import Agent, RunFinished, ToolResult, TurnFinished

pytestmark = pytest.mark.anyio


def lookup(key: Literal["color", "size"]) -> str:
    """Looks a key up."""
    return f"value of {key}"


def test_lazy_exports():
    code = ("import sys, agentfast; assert 'agentfast.agent' not in sys.modules; "
            "assert agentfast.Agent.__name__ == 'Agent' and callable(agentfast.tool)")
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_forced_tool_call_then_kv_reused(tiny_engine):
    # one call: with parallel calls the greedy random model repeats it until max_tokens
    agent = agentfast.Agent(tiny_engine, tools=[lookup], max_turns=4,
                            settings={"max_tokens": 120, "temperature": 0,
                                      "parallel_tool_calls": False})
    turns, results = [], []
    async for ev in agent.run_stream("Look up 'a'.", first_tool_choice="required"):
        if isinstance(ev, ToolResult):
            results.append(ev)
        if isinstance(ev, TurnFinished):
            turns.append(ev)
            if len(turns) == 2:
                break
    assert turns[0].tool_calls >= 1 and results and results[0].name == "lookup"
    # strict: the grammar made the arguments valid, so the tool ran
    assert results[0].ok and results[0].output.startswith("value of ")
    t2 = turns[1].trace
    assert t2.cached_tokens > 0, "turn 2 should reuse the session's KV from turn 1"
    assert t2.prefilled_tokens < t2.prompt_tokens
    assert turns[0].trace.ttft_s > 0


async def test_embedded_model_end_to_end(embedded_engine):
    agent = Agent(embedded_engine, instructions="You are a helpful assistant.", tools=[lookup],
                  max_turns=3, settings={"max_tokens": 48, "temperature": 0})
    events = []
    try:
        async for ev in agent.run_stream("Look up the key 'color' and tell me its value.",
                                         first_tool_choice="required"):
            events.append(ev)
    except agentfast.agent.MaxTurnsExceeded:
        pass  # a small model may keep calling tools; the mechanics are what is tested
    assert any(isinstance(e, ToolResult) and e.ok for e in events)
    done = [e for e in events if isinstance(e, RunFinished)]
    if done:
        r = done[0].result
        assert isinstance(r.output, str) and r.messages[-1]["role"] == "assistant"
        assert r.trace.turns[-1].cached_tokens > 0


async def test_agents_share_one_engine(tiny_engine):
    """Two agents on one engine, run at once: the engine serves one generation at a time, each
    run keeps its own session (both reuse their own KV on turn 2) and both finish their turns."""
    import anyio

    agents = [Agent(tiny_engine, tools=[lookup], max_turns=4,
                    settings={"max_tokens": 40, "temperature": 0}) for _ in range(2)]
    traces: dict[int, list] = {0: [], 1: []}

    async def go(i: int) -> None:
        async for ev in agents[i].run_stream(f"Look up {i}.", first_tool_choice="required",
                                             session=f"shared-{i}"):
            if isinstance(ev, TurnFinished):
                traces[i].append(ev.trace)
                if len(traces[i]) == 2:
                    break

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, 0)
        tg.start_soon(go, 1)
    for i in (0, 1):
        assert len(traces[i]) == 2 and traces[i][1].cached_tokens > 0
    # both sessions' KV caches live in the one engine's store
    assert {"h:shared-0", "h:shared-1"} <= set(tiny_engine.sessions._sessions)


async def test_direct_path_matches_the_openai_client_path(tiny_engine):
    """The engine driven directly and through agentfast.AsyncOpenAI: the same prompts (token
    counts, reuse) and the same greedy outputs, turn by turn."""
    runs = []
    for direct in (True, False):
        agent = Agent(tiny_engine, instructions="Be brief.", tools=[lookup], max_turns=2,
                      direct=direct, settings={"max_tokens": 40, "temperature": 0})
        assert (agent.engine_chat is not None) == direct and (agent.client is None) == direct
        try:
            r = await agent.run("Look up 'a'.", first_tool_choice="required")
        except agentfast.agent.MaxTurnsExceeded as e:
            r = e.result
        runs.append(r)

    def shape(r):
        out = []
        for m in r.messages:
            m = dict(m)
            m.pop("tool_call_id", None)
            for c in m.get("tool_calls") or ():
                c.pop("id")
            out.append(m)
        return out

    d, s = runs
    assert shape(d) == shape(s)
    assert [(t.prompt_tokens, t.cached_tokens, t.completion_tokens) for t in d.trace.turns] == \
        [(t.prompt_tokens, t.cached_tokens, t.completion_tokens) for t in s.trace.turns]
    assert d.trace.turns[0].cached_tokens == 0 and d.trace.turns[1].cached_tokens > 0


async def test_stopping_early_cancels_the_engine_generation(tiny_engine):
    """Leaving run_stream mid-turn (direct path) cancels the engine's job: it ends as
    "cancelled" with a handful of tokens, not the 1500 it was allowed."""
    from agentfast.server.scheduler import scheduler_for

    metrics = scheduler_for(tiny_engine).metrics
    before = metrics.generations["cancelled"]
    tokens_before = metrics.output_tokens
    agent = Agent(tiny_engine, settings={"max_tokens": 1500, "temperature": 0})
    run = agent.run_stream("Say many things.")
    async for ev in run:
        assert ev.__class__.__name__ == "TextDelta"
        break
    await run.aclose()
    r = await Agent(tiny_engine, settings={"max_tokens": 4, "temperature": 0}).run("Hi.")
    assert r.trace.turns[0].completion_tokens <= 4
    assert metrics.generations["cancelled"] == before + 1
    assert metrics.output_tokens - tokens_before < 200
