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
    agent = agentfast.Agent(tiny_engine, tools=[lookup], max_turns=4,
                            settings={"max_tokens": 120, "temperature": 0})
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
