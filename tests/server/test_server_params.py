"""Request parameters -> constraints: the tool grammar is built once per tools definition."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from agentfast.server import params  # noqa: E402
from agentfast.server.protocol import APIError  # noqa: E402

TOOL = {"type": "function", "function": {
    "name": "read_file", "strict": True,
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"], "additionalProperties": False}}}


def test_tool_grammar_is_memoized_per_definition():
    a = params.tool_constraint([TOOL], "required", None)
    b = params.tool_constraint([dict(TOOL)], "required", None)  # equal, not the same object
    assert a is b
    c = params.tool_constraint([TOOL], "required", None, parallel=False)
    assert c is not a and c.regex != a.regex
    other = {**TOOL, "function": {**TOOL["function"], "name": "write_file"}}
    assert params.tool_constraint([other], "required", None) is not a


def test_memo_does_not_hide_errors():
    bad = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"x": {"not": {"type": "string"}}}, "required": ["x"],
        "additionalProperties": False}}}
    for _ in range(2):  # the failure is not cached as a success
        with pytest.raises(APIError, match="tools"):
            params.tool_constraint([bad], "required", None)
