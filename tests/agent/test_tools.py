"""Tool schemas from hints and docstrings; validation, exceptions and timeouts as result text."""

from __future__ import annotations

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


async def test_exception_and_timeout_become_text():
    @tool
    async def boom(x: int) -> int:
        raise ValueError("no such file")

    @tool
    async def slow(x: int) -> int:
        await anyio.sleep(10)
        return x

    @tool
    def slow_sync(x: int) -> int:
        time.sleep(0.5)
        return x

    assert await boom.call('{"x": 1}', 5) == ("Error: boom raised ValueError: no such file", False)
    t0 = time.perf_counter()
    out, good = await slow.call('{"x": 1}', 0.1)
    assert not good and "timed out after 0.1 s" in out and time.perf_counter() - t0 < 1
    out, good = await slow_sync.call('{"x": 1}', 0.1)
    assert not good and "timed out" in out
    assert await slow_sync.call('{"x": 2}', 5) == ("2", True)


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
