"""The embedded SmolLM2-135M-Instruct behind the server, in process: a real answer, a strict
tool call whose arguments validate, and a JSON Schema response."""

from __future__ import annotations

import json

import jsonschema
import pytest

import agentfast
from agentfast.server import create_app

pytestmark = pytest.mark.anyio

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 24},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": WEATHER, "strict": True}}]


@pytest.fixture(scope="module")
def smol(embedded_engine):
    return agentfast.AsyncOpenAI(app=create_app(embedded_engine, model_name="smol"))


async def test_answers_paris(smol):
    r = await smol.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content


async def test_strict_tool_call_validates(smol, constraints):
    s = await smol.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=TOOLS, tool_choice="required", max_tokens=60, temperature=0, stream=True,
        parallel_tool_calls=False)  # one call: greedy SmolLM2 would repeat it to max_tokens
    name, args, finish = "", "", None
    async for c in s:
        for tc in c.choices[0].delta.tool_calls or ():
            name += tc.function.name or ""
            args += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert (name, finish) == ("get_weather", "tool_calls")
    value = json.loads(args)
    jsonschema.validate(value, WEATHER)
    assert "paris" in value["city"].lower()


async def test_response_format_json_schema(smol, constraints):
    person = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": False}
    r = await smol.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Invent a person, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {
            "name": "person", "schema": person, "strict": True}},
        max_tokens=60, temperature=0)
    jsonschema.validate(json.loads(r.choices[0].message.content), person)
