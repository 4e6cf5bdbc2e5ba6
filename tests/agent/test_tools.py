"""Tool schemas from hints and docstrings; validation, exceptions and timeouts as result text."""

from __future__ import annotations

import threading
import time
from typing import Literal

import anyio
import jsonschema
import pytest
from pydantic import BaseModel

from agentfast.agent import tool

pytestmark = pytest.mark.anyio


class Point(BaseModel):
    x: int
    y: int


@tool
def everything(n: int, f: float, s: str, b: bool, xs: list[int], mode: Literal["a", "b"],
               opt: int | None = None, p: Point | None = None) -> str:
    """Uses every kind of argument.

    Args:
        n: a count
        mode: which mode
    """
    return f"{n} {mode}"


def test_schema_from_hints_and_docstring():
    s = everything.parameters
    assert everything.name == "everything"
    assert everything.description == "Uses every kind of argument."
    assert s["type"] == "object" and s["additionalProperties"] is False
    assert s["required"] == ["n", "f", "s", "b", "xs", "mode", "opt", "p"]
    props = s["properties"]
    assert props["n"] == {"type": "integer", "description": "a count"}
    assert props["f"]["type"] == "number" and props["b"]["type"] == "boolean"
    assert props["xs"] == {"type": "array", "items": {"type": "integer"}}
    assert props["mode"]["enum"] == ["a", "b"]
    assert {"type": "null"} in props["opt"]["anyOf"]
    assert s["$defs"]["Point"]["additionalProperties"] is False
    assert s["$defs"]["Point"]["required"] == ["x", "y"]
    assert everything.spec()["function"]["strict"] is True
    jsonschema.Draft202012Validator.check_schema(s)


async def test_valid_call_and_validation_errors():
    ok = {"n": 3, "f": 1.5, "s": "x", "b": True, "xs": [1], "mode": "a", "opt": None, "p": None}
    import json

    assert await everything.call(json.dumps(ok), 5) == ("3 a", True)
    out, good = await everything.call(json.dumps({**ok, "n": "three", "mode": "c"}), 5)
    assert not good and out.startswith("Error: invalid arguments for everything")
    assert "n:" in out and "mode:" in out
    out, good = await everything.call("{not json", 5)
    assert not good and "invalid arguments" in out
    out, good = await everything.call(json.dumps({**ok, "extra": 1}), 5)
    assert not good and "extra" in out


@pytest.mark.parametrize("scope", ["asyncio.timeout", "anyio"])
async def test_exception_and_timeout_become_text(scope, monkeypatch):
    """A tool's exception or timeout is a result text. On an asyncio loop (Python 3.11+) the
    timeout is an asyncio.timeout, elsewhere an anyio CancelScope: the same text either way,
    and a cancellation from outside (the run given up) stays a cancellation, not a timeout."""
    import agentfast.agent.tools as tools_mod

    if scope == "anyio":
        monkeypatch.setattr(tools_mod, "_asyncio_timeout", None)
    elif tools_mod._asyncio_timeout is None:
        pytest.skip("asyncio.timeout needs Python 3.11")

    @tool
    async def boom(x: int) -> int:
        raise ValueError("no such file")

    @tool
    async def slow(x: int) -> int:
        await anyio.sleep(10)
        return x

    @tool
    def slow_sync(x: int) -> int:
        time.sleep(0.3)
        return x

    @tool
    async def quick(x: int) -> int:
        await anyio.sleep(0.01)
        return x

    assert await boom.call('{"x": 1}', 5) == ("Error: boom raised ValueError: no such file", False)
    r = await slow.run('{"x": 1}', 0.05)
    assert (r.text, r.ok) == ("Error: slow timed out after 0.05 s", False)
    assert 0.04 < r.seconds < 1
    out, good = await slow_sync.call('{"x": 1}', 0.05)
    assert not good and "timed out after 0.05 s" in out
    assert await slow_sync.call('{"x": 2}', 5) == ("2", True)
    assert await quick.call('{"x": 3}', None) == ("3", True)  # no timeout at all
    with anyio.move_on_after(0.05) as outer:
        await slow.run('{"x": 1}', 5)
    assert outer.cancelled_caught  # the outer scope's cancellation, not a tool timeout


def test_tool_options_and_plain_functions():
    @tool(name="find", description="Finds things.")
    def f(q: str) -> list[str]:
        return [q]

    assert f.name == "find" and f.description == "Finds things."
    assert f.parameters["required"] == ["q"]


async def test_pydantic_model_as_tool():
    class Search(BaseModel):
        """Searches the notes.

        More text that is part of the description."""

        query: str
        limit: int = 3

        async def run(self) -> list[str]:
            return [self.query] * self.limit

    t = tool(Search)
    assert t.name == "Search" and t.description.startswith("Searches the notes.")
    assert t.parameters["required"] == ["query", "limit"]
    assert t.parameters["additionalProperties"] is False and "default" not in str(t.parameters)
    assert await t.call('{"query": "q", "limit": 2}', 5) == ('["q", "q"]', True)
    out, ok = await t.call('{"query": 1, "limit": 2}', 5)
    assert not ok and "query" in out
    with pytest.raises(AssertionError, match="run"):
        tool(Point)  # no run() method


async def test_where_a_tool_runs_and_its_own_span():
    """Async and inline tools run on the event loop's thread, other sync tools in a worker
    thread; ToolRun's span is the function's own run (inside the call, around what the
    function measured itself), so validation and thread hops fall outside it."""
    seen: dict[str, tuple[int, float, float]] = {}

    def body(kind: str, x: int) -> int:
        t = time.perf_counter()
        time.sleep(0.02)
        seen[kind] = (threading.get_ident(), t, time.perf_counter())
        return x

    @tool(inline=True)
    def quick(x: int) -> int:
        return body("inline", x)

    @tool
    def threaded(x: int) -> int:
        return body("thread", x)

    @tool
    async def coro(x: int) -> int:
        await anyio.sleep(0)
        return body("async", x)

    assert quick.inline and not threaded.inline and coro.is_async
    for t, kind in ((quick, "inline"), (threaded, "thread"), (coro, "async")):
        t0 = time.perf_counter()
        r = await t.run('{"x": 3}', 5)
        t1 = time.perf_counter()
        _, inner0, inner1 = seen[kind]
        assert (r.text, r.ok) == ("3", True)
        assert t0 < r.start <= inner0 < inner1 <= r.end < t1, kind
        assert r.seconds == r.end - r.start >= 0.02
    here = threading.get_ident()
    assert seen["inline"][0] == seen["async"][0] == here != seen["thread"][0]
    bad = await quick.run('{"x": "three"}', 5)
    assert not bad.ok and bad.seconds == 0  # invalid arguments: the function never ran
    assert await quick.call('{"x": 4}', 5) == ("4", True)
