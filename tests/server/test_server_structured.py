"""Tool calls and response_format through the grammar (engine constraints) on the tiny model:
whatever the random weights want, the output parses, validates and streams in OpenAI's shape."""

from __future__ import annotations

import json

import jsonschema
import pytest

pytestmark = pytest.mark.usefixtures("constraints")

PARAMS = {"type": "object", "properties": {
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "alerts": {"type": "boolean"}},
    "required": ["unit", "days", "alerts"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "forecast", "description": "Weather forecast",
                                      "parameters": PARAMS, "strict": True}},
    {"type": "function", "function": {"name": "noop", "parameters": {
        "type": "object", "properties": {}, "additionalProperties": False}, "strict": True}},
]
Q = [{"role": "user", "content": "Weather in Paris for 3 days?"}]


def test_required_tool_call_validates(client):
    r = client.chat.completions.create(model="tiny", messages=Q, tools=TOOLS,
                                       tool_choice="required", max_tokens=120, temperature=0,
                                       parallel_tool_calls=False)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    (call,) = ch.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}[
        call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_named_tool_call_streams_in_openai_shape(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=Q, tools=TOOLS, max_tokens=120, temperature=0, stream=True,
        tool_choice={"type": "function", "function": {"name": "forecast"}},
        parallel_tool_calls=False))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    first, rest = calls[0], calls[1:]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0, "function", "forecast", "")
    assert first.id.startswith("call_")
    assert rest and all(c.id is None and c.function.name is None and c.index == 0
                        for c in rest)
    args = json.loads("".join(c.function.arguments for c in rest))
    jsonschema.validate(args, PARAMS)
    assert not any(d.content for d in deltas)  # no raw <tool_call> text in content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_round_trip_reuses_the_cache(client):
    msgs = list(Q)
    r1 = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS,
                                        tool_choice="required", max_tokens=120, temperature=0)
    call = r1.choices[0].message.tool_calls[0]
    msgs += [r1.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'}]
    r2 = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS,
                                        tool_choice="none", max_tokens=8, temperature=0)
    assert r2.choices[0].message.tool_calls is None
    assert r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens


@pytest.mark.parametrize("fmt", ["json_schema", "json_object"])
def test_response_format(client, fmt):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                               "level": {"enum": ["low", "high"]}},
              "required": ["ok", "level"], "additionalProperties": False}
    rf = ({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
          if fmt == "json_schema" else {"type": "json_object"})
    r = client.chat.completions.create(model="tiny", messages=Q, response_format=rf,
                                       max_tokens=200, temperature=0)
    if r.choices[0].finish_reason == "stop":  # a random model may ramble inside json_object
        value = json.loads(r.choices[0].message.content)
        assert isinstance(value, dict)
        if fmt == "json_schema":
            jsonschema.validate(value, schema)
    else:
        assert fmt == "json_object"


def test_responses_function_call_events(client):
    tools = [{"type": "function", "name": t["function"]["name"],
              "parameters": t["function"]["parameters"]} for t in TOOLS]
    events = list(client.responses.create(model="tiny", input="Weather in Paris?", tools=tools,
                                          tool_choice="required", max_output_tokens=120,
                                          temperature=0, stream=True,
                                          parallel_tool_calls=False))  # one call, then stop
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    assert types[-1] == "response.completed"
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call"
    item = events[-1].response.output[0]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert item.type == "function_call" and item.arguments == deltas
    json.loads(item.arguments)
