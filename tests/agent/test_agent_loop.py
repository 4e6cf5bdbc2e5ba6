"""The loop on a scripted client: tool results (and tool failures) go back to the model, calls of
one turn overlap, max_turns, event order, structured output, the trace."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from pydantic import BaseModel

from agentfast.agent import (
    Agent,
    MaxTurnsExceeded,
    RunFinished,
    TextDelta,
    ToolCallStarted,
    ToolResult,
    TurnFinished,
    tool,
)

pytestmark = pytest.mark.anyio


def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


async def test_tool_result_goes_back_and_run_finishes(fake):
    client = fake([[("add", {"a": 2, "b": 3})], "The sum is 5."])
    r = await Agent(client, instructions="Be brief.", tools=[add]).run("2+3?")
    assert r.output == "The sum is 5." and r.turns == 2
    roles = [m["role"] for m in r.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert r.messages[3] == {"role": "tool", "tool_call_id": "call_0", "content": "5"}
    req = client.requests[0]
    assert req["tool_choice"] == "auto" and req["tools"][0]["function"]["strict"] is True
    assert req["user"] == client.requests[1]["user"]  # one session for the run
    assert req["extra_headers"]["x-session-id"] == req["user"]
    # append-only: the second request starts with the first one's messages
    assert client.requests[1]["messages"][:2] == r.messages[:2]
    assert r.usage.completion_tokens == 10 and r.usage.cached_tokens > 0


async def test_failures_are_returned_to_the_model(fake):
    @tool
    def broken(path: str) -> str:
        raise FileNotFoundError(path)

    @tool
    async def sleepy(x: int) -> int:
        await anyio.sleep(5)
        return x

    client = fake([[("add", {"a": "two", "b": 3}), ("broken", {"path": "x.py"}),
                    ("sleepy", {"x": 1}), ("nope", {})], "done"])
    agent = Agent(client, tools=[add, broken, sleepy], tool_timeout=0.2)
    r = await agent.run("go")
    tool_msgs = [m["content"] for m in r.messages if m["role"] == "tool"]
    assert tool_msgs[0].startswith("Error: invalid arguments for add: a:")
    assert tool_msgs[1] == "Error: broken raised FileNotFoundError: x.py"
    assert tool_msgs[2] == "Error: sleepy timed out after 0.2 s"
    assert tool_msgs[3].startswith("Error: no tool named 'nope'")
    assert r.output == "done"


async def test_calls_of_one_turn_overlap_under_the_limit(fake):
    running, peak = 0, 0

    @tool
    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.1)
        running -= 1
        return i

    client = fake([[("work", {"i": i}) for i in range(6)], "ok"])
    r = await Agent(client, tools=[work], max_concurrent_tools=3).run("go")
    assert peak == 3
    assert [m["content"] for m in r.messages if m["role"] == "tool"] == [str(i) for i in range(6)]
    assert 0.15 < r.trace.turns[0].tool_s < 0.5  # 2 waves of 0.1 s, not 6


async def test_max_turns(fake):
    client = fake([[("add", {"a": 1, "b": 1})]] * 3)
    with pytest.raises(MaxTurnsExceeded, match="max_turns=3") as e:
        await Agent(client, tools=[add], max_turns=3).run("loop")
    assert e.value.result.turns == 3 and len(client.requests) == 3


async def test_streamed_event_order(fake):
    client = fake([[("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})], "three and seven"])
    events = [ev async for ev in Agent(client, tools=[add]).run_stream("go")]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ToolCallStarted", "ToolCallStarted", "ToolResult", "ToolResult",
                     "TurnFinished", "TextDelta", "TextDelta", "TurnFinished", "RunFinished"]
    assert isinstance(events[0], ToolCallStarted) and events[0].name == "add"
    # the two results in the order the calls finished (they run concurrently in threads)
    assert {(e.output, e.ok) for e in events[2:4]} == {("3", True), ("7", True)}
    assert isinstance(events[4], TurnFinished) and events[4].tool_calls == 2
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "three and seven"
    assert isinstance(events[-1], RunFinished) and events[-1].output == "three and seven"


class Answer(BaseModel):
    city: str
    population: int


async def test_output_type_uses_strict_json_schema(fake):
    client = fake([json.dumps({"city": "Paris", "population": 2})])
    r = await Agent(client, output_type=Answer).run("Biggest city?")
    assert r.output == Answer(city="Paris", population=2)
    fmt = client.requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False


async def test_output_type_with_tools_asks_for_the_structured_answer_last(fake):
    client = fake([[("add", {"a": 1, "b": 1})], "it is Paris",
                   json.dumps({"city": "Paris", "population": 2})])
    r = await Agent(client, tools=[add], output_type=Answer).run("go")
    assert r.output.city == "Paris" and r.turns == 3
    assert "response_format" not in client.requests[0]
    assert "tools" not in client.requests[2] and "response_format" in client.requests[2]


async def test_trace(fake):
    client = fake([[("add", {"a": 1, "b": 1})], "2"])
    r = await Agent(client, tools=[add]).run("go")
    t = r.trace
    assert len(t.turns) == 2 and t.turns[1].cached_tokens > 0
    assert t.turns[1].prefilled_tokens == t.turns[1].prompt_tokens - t.turns[1].cached_tokens
    assert "ttft_ms" in t.summary() and "2 turns" in t.summary()
    d = json.loads(t.to_json())
    assert {"ttft_s", "decode_tps", "prefilled_tokens", "cached_tokens", "tool_s", "host_s"} <= \
        set(d["turns"][0])


async def test_tool_results_stream_as_each_tool_finishes(fake):
    """A slow and a fast call in one turn: the fast one's ToolResult comes first, before the
    slow one has finished; the tool messages still follow call order."""
    finished: list[str] = []

    @tool
    async def slow() -> str:
        await anyio.sleep(0.3)
        finished.append("slow")
        return "slow done"

    @tool
    def fast() -> str:
        finished.append("fast")
        return "fast done"

    client = fake([[("slow", {}), ("fast", {})], "both done"])
    seen = []
    async for ev in Agent(client, tools=[slow, fast]).run_stream("go"):
        if isinstance(ev, ToolResult):
            seen.append((ev.name, list(finished), ev.seconds))
        if isinstance(ev, RunFinished):
            r = ev.result
    assert [s[0] for s in seen] == ["fast", "slow"]
    assert seen[0][1] == ["fast"], "the fast result must be yielded while the slow tool runs"
    assert seen[0][2] < 0.1 <= 0.25 < seen[1][2]
    tool_msgs = [m for m in r.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_0", "call_1"]
    assert [m["content"] for m in tool_msgs] == ["slow done", "fast done"]


class Multiply(BaseModel):
    """Multiplies two integers."""

    a: int
    b: int

    def run(self) -> int:
        return self.a * self.b


async def test_pydantic_model_tool(fake):
    client = fake([[("Multiply", {"a": 6, "b": 7}), ("Multiply", {"a": "x", "b": 1})], "42"])
    r = await Agent(client, tools=[Multiply]).run("6*7?")
    spec = client.requests[0]["tools"][0]["function"]
    assert spec["name"] == "Multiply" and spec["description"] == "Multiplies two integers."
    assert spec["parameters"]["required"] == ["a", "b"]
    assert spec["parameters"]["additionalProperties"] is False
    outs = [m["content"] for m in r.messages if m["role"] == "tool"]
    assert outs[0] == "42"
    assert outs[1].startswith("Error: invalid arguments for Multiply: a:")


async def test_stopping_early_closes_the_model_stream(fake):
    closed = []

    class Closing(type(fake([]))):
        async def create(self, **kw):
            gen = await super().create(**kw)

            class S:
                def __aiter__(self):
                    return gen.__aiter__()

                async def close(self):
                    closed.append(True)
            return S()

    client = Closing(["a long answer"])
    run = Agent(client).run_stream("go")
    async for ev in run:
        assert isinstance(ev, TextDelta)
        break
    await run.aclose()
    assert closed == [True]


def test_tool_time_is_the_union_of_the_functions_spans():
    from agentfast.agent.agent import _covered

    assert _covered([]) == 0
    assert _covered([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert _covered([(1.0, 2.0), (0.0, 3.0), (2.5, 2.5)]) == pytest.approx(3.0)


async def test_tool_time_leaves_out_the_dispatch(fake):
    """A sync tool in a worker thread: the turn's tool_s is the function's own span (its
    ToolResult.seconds), not the thread hops and validation around it."""
    spans = []

    @tool
    def work() -> str:
        t = time.perf_counter()
        time.sleep(0.05)
        spans.append((t, time.perf_counter()))
        return "done"

    client = fake([[("work", {})], "ok"])
    events = [ev async for ev in Agent(client, tools=[work]).run_stream("go")]
    (res,) = [e for e in events if isinstance(e, ToolResult)]
    tt = next(e for e in events if isinstance(e, TurnFinished)).trace
    (inner,) = spans
    assert tt.tool_s == res.seconds >= inner[1] - inner[0] >= 0.05
