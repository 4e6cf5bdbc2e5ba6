"""What the per-turn trace carries from the engine: with an n-gram drafter on a repetitive task,
the accepted draft tokens and the mean accepted per verification step (the engine's own count
for the generation; the client path gets the count from usage); and the sessions a run makes
for itself are released at its end, their KV cache taken over by the next run."""

from __future__ import annotations

import pytest

import agentfast
from agentfast.engine import Engine

pytestmark = pytest.mark.anyio

TASK = "0123456789 0123456789 0123456789 0123456789 0123"


@pytest.fixture(scope="module")
def drafting_engine(llama_dir):
    from agentfast.spec_decode import NgramDrafter

    return Engine.load(str(llama_dir), device="cpu", drafter=NgramDrafter())


async def test_trace_has_the_accepted_draft_length(drafting_engine):
    d = drafting_engine.drafter
    before = (d.steps, d.accepted)
    agent = agentfast.Agent(drafting_engine, settings={"max_tokens": 48, "temperature": 0})
    result = await agent.run(TASK)
    (t,) = result.trace.turns
    steps, accepted = d.steps - before[0], d.accepted - before[1]
    assert steps > 0 and accepted > 0, (steps, accepted)
    assert t.accepted_draft_tokens == accepted
    assert t.accepted_draft_length == pytest.approx(accepted / steps)
    assert t.accepted_draft_length > 0
    assert "acc/step" in result.trace.summary()


async def test_client_path_reports_the_accepted_count(drafting_engine):
    client = agentfast.AsyncOpenAI(engine=drafting_engine)
    agent = agentfast.Agent(client, settings={"max_tokens": 48, "temperature": 0})
    result = await agent.run(TASK)
    (t,) = result.trace.turns
    assert t.accepted_draft_tokens > 0  # usage.completion_tokens_details
    assert t.accepted_draft_length == 0  # not in the usage of a chat completion


async def test_a_run_releases_the_session_it_made(tiny_engine):
    agent = agentfast.Agent(tiny_engine, settings={"max_tokens": 4, "temperature": 0})
    sessions = tiny_engine.sessions
    before = set(sessions._sessions)
    await agent.run("Hi.")
    assert not [s for s in set(sessions._sessions) - before if s.startswith("h:agent-")]
    (spare,) = sessions._free  # the released session's KV cache, kept for the next one
    async for _ in agent.run_stream("Hi again.", session="mine"):
        pass
    assert sessions._sessions["h:mine"].cache is spare  # taken over, not allocated
    assert "h:mine" in sessions._sessions  # a session the caller named is kept
