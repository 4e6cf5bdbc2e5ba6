"""/v1/responses state: previous_response_id continues a stored response in the same engine
session (its KV reused), `store`, `instructions` (not carried over), function_call_output
items, retrieval and deletion, a bounded store, and 400/404 for bad or unknown ids."""

from __future__ import annotations

import json

import openai
import pytest

import agentfast
from agentfast.server import create_app

from .scripted import Scripted

KW = {"model": "tiny", "max_output_tokens": 8, "temperature": 0}


def test_previous_response_id_continues_and_reuses_the_kv(client):
    r1 = client.responses.create(input="Read the file src/main.py", instructions="Be brief.",
                                 **KW)
    r2 = client.responses.create(input="Now edit it.", previous_response_id=r1.id,
                                 instructions="Be brief.", **KW)
    assert r2.previous_response_id == r1.id and r2.store is True
    assert r2.usage.input_tokens_details.cached_tokens >= r1.usage.input_tokens
    assert r2.usage.input_tokens > r1.usage.input_tokens + r1.usage.output_tokens


def test_streamed_responses_are_stored_too(client):
    events = list(client.responses.create(input="The capital of France is", stream=True, **KW))
    done = events[-1].response
    got = client.responses.retrieve(done.id)
    assert got.id == done.id and got.output_text == done.output_text
    items = client.responses.input_items.list(done.id).data
    assert [(i.type, i.role) for i in items] == [("message", "user")]
    r2 = client.responses.create(input="And Germany?", previous_response_id=done.id, **KW)
    assert r2.usage.input_tokens_details.cached_tokens >= done.usage.input_tokens


def test_store_false_delete_and_unknown_ids(client):
    r = client.responses.create(input="hello", store=False, **KW)
    assert r.store is False
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(input="again", previous_response_id=r.id, **KW)
    assert e.value.param == "previous_response_id"
    assert e.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    kept = client.responses.create(input="hello", **KW)
    assert client.responses.retrieve(kept.id).output_text == kept.output_text
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(input="x", previous_response_id=kept.id, **KW)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(input="x", previous_response_id="msg_123", **KW)
    assert e.value.param == "previous_response_id"
    assert client.responses.create(input="still serving", **KW).output_text is not None


def test_function_call_output_continues_a_call(client, constraints):
    tool = {"type": "function", "name": "get_weather", "strict": True, "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"], "additionalProperties": False}}
    r1 = client.responses.create(input="Weather in Paris?", tools=[tool],
                                 tool_choice="required", parallel_tool_calls=False,
                                 **{**KW, "max_output_tokens": 60})
    (call,) = [o for o in r1.output if o.type == "function_call"]
    assert json.loads(call.arguments)["unit"] in ("celsius", "fahrenheit")
    out = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 18}'}
    r2 = client.responses.create(input=[out], previous_response_id=r1.id, tools=[tool],
                                 tool_choice="none", **KW)
    assert r2.status in ("completed", "incomplete") and r2.output
    assert all(o.type == "message" for o in r2.output)
    assert r2.usage.input_tokens_details.cached_tokens >= r1.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as e:  # an output for a call nobody made
        client.responses.create(input=[{**out, "call_id": "call_nope"}],
                                previous_response_id=r1.id, tools=[tool], **KW)
    assert e.value.param == "input[0].call_id"


def test_conversation_and_instructions_through_previous_response_id(tiny_engine):
    eng = Scripted(tiny_engine, "Paris.")
    client = agentfast.OpenAI(app=create_app(eng, model_name="tiny"))
    tok = tiny_engine.tokenizer
    r1 = client.responses.create(model="tiny", input="Capital of France?",
                                 instructions="SECRET-RULES")
    r2 = client.responses.create(model="tiny", input="And of Italy?", previous_response_id=r1.id)
    r3 = client.responses.create(model="tiny", input="And of Spain?", previous_response_id=r2.id,
                                 instructions="NEW-RULES")
    texts = [tok.decode(p, skip_special=False) for p in eng.prompts]
    assert "SECRET-RULES" in texts[0]
    assert "SECRET-RULES" not in texts[1]  # instructions are not carried over
    assert texts[1].index("Capital of France?") < texts[1].index("Paris.") < texts[1].index(
        "And of Italy?")
    assert "NEW-RULES" in texts[2] and texts[2].index("NEW-RULES") < texts[2].index(
        "Capital of France?")
    assert texts[2].count("Paris.") == 2 and "And of Spain?" in texts[2]
    assert r3.previous_response_id == r2.id and r3.instructions == "NEW-RULES"
    # continuing r1 renders the same prompt as sending its whole conversation again
    full = [{"role": "user", "content": "Capital of France?"},
            *[o.model_dump(exclude_none=True) for o in r1.output],
            {"role": "user", "content": "And of Italy?"}]
    client.responses.create(model="tiny", input=full, store=False)
    assert tok.decode(eng.prompts[-1], skip_special=False) == texts[1]


def test_the_store_is_bounded(tiny_engine):
    app = create_app(Scripted(tiny_engine, "ok"), model_name="tiny", response_store_size=2)
    client = agentfast.OpenAI(app=app)
    ids = [client.responses.create(model="tiny", input=f"q{i}").id for i in range(3)]
    assert len(app.state.responses) == 2
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[0])
    assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]
