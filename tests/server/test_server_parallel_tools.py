"""parallel_tool_calls: several calls in one assistant turn, in each format the parser knows,
streamed by index in OpenAI's chunk shape (chat) and as separate items (Responses); the
tool-call grammar takes one or more calls when parallel, exactly one when not.

The wire-shape tests run the real app on a scripted engine (the tiny engine whose generation
is replaced by a fixed text), so the model's output is known; the grammar tests check the
constraint itself."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

from agentfast.server import create_app

from .conftest import serve
from .scripted import Scripted

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER,
                                           "strict": True}},
         {"type": "function", "function": {"name": "get_time", "parameters": WEATHER,
                                           "strict": True}}]
Q = [{"role": "user", "content": "Weather and time in Paris and Rome?"}]
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Rome"}),
         ("get_weather", {"city": "Rome"})]


def hermes(calls) -> str:
    return "\n".join(f'<tool_call>\n{{"name": "{n}", "arguments": {json.dumps(a)}}}\n'
                     "</tool_call>" for n, a in calls)


def mistral(calls) -> str:
    return "[TOOL_CALLS] " + json.dumps([{"name": n, "arguments": a} for n, a in calls])


def llama3(calls) -> str:
    return "<|python_tag|>" + "; ".join(json.dumps({"name": n, "parameters": a})
                                        for n, a in calls)


@pytest.fixture(scope="module")
def scripted(tiny_engine):
    return Scripted(tiny_engine, formats=True)


@pytest.fixture(scope="module")
def sclient(scripted):
    app = create_app(scripted, model_name="scripted", request_timeout=60)
    for url in serve(app):
        yield openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)


def ask(client, **kw):
    return client.chat.completions.create(model="scripted", messages=Q, tools=TOOLS,
                                          max_tokens=50, temperature=0, **kw)


@pytest.mark.parametrize("fmt", [hermes, mistral, llama3])
def test_several_calls_non_stream(scripted, sclient, fmt):
    scripted.text = fmt(CALLS)
    ch = ask(sclient).choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    got = [(c.function.name, json.loads(c.function.arguments)) for c in ch.message.tool_calls]
    assert got == CALLS
    ids = [c.id for c in ch.message.tool_calls]
    assert len(set(ids)) == len(ids) and all(i.startswith("call_") for i in ids)


@pytest.mark.parametrize("fmt", [hermes, mistral, llama3])
def test_several_calls_stream_by_index(scripted, sclient, fmt):
    scripted.text = "Checking both. " * (fmt is hermes) + fmt(CALLS)
    chunks = list(ask(sclient, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    content = "".join(d.content or "" for d in deltas)
    assert content == ("Checking both. " if fmt is hermes else "")
    parts = [tc for d in deltas for tc in d.tool_calls or ()]
    firsts = [p for p in parts if p.id is not None]
    # each call opens with index, id, type, name and empty arguments, in order 0, 1, 2
    assert [(p.index, p.type, p.function.name, p.function.arguments) for p in firsts] == [
        (i, "function", n, "") for i, (n, _) in enumerate(CALLS)]
    rest = [p for p in parts if p.id is None]
    assert all(p.function.name is None and p.type is None for p in rest)
    indices = [p.index for p in parts]
    assert indices == sorted(indices)  # a call's fragments come before the next call opens
    for i, (_, args) in enumerate(CALLS):
        assert json.loads("".join(p.function.arguments for p in rest if p.index == i)) == args
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_parallel_false_keeps_the_first_call(scripted, sclient):
    scripted.text = hermes(CALLS)
    ch = ask(sclient, parallel_tool_calls=False).choices[0]
    assert [c.function.name for c in ch.message.tool_calls] == ["get_weather"]
    assert ch.finish_reason == "tool_calls"


def test_responses_several_function_call_items(scripted, sclient):
    scripted.text = hermes(CALLS)
    tools = [{"type": "function", "name": t["function"]["name"],
              "parameters": t["function"]["parameters"]} for t in TOOLS]
    events = list(sclient.responses.create(model="scripted", input="Weather?", tools=tools,
                                           max_output_tokens=50, stream=True))
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.type, e.item.name) for e in added] == [
        (i, "function_call", n) for i, (n, _) in enumerate(CALLS)]
    out = events[-1].response.output
    assert [(o.name, json.loads(o.arguments)) for o in out] == CALLS
    for i, o in enumerate(out):
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"
                  and e.output_index == i]
        assert "".join(deltas) == o.arguments
    assert len({o.call_id for o in out}) == len(CALLS)


# ---- the grammar --------------------------------------------------------------------------

def test_grammar_takes_one_or_more_calls_only_when_parallel(constraints):
    from agentfast.engine import constraints as C

    two, three = hermes(CALLS[:2]), hermes(CALLS).replace("</tool_call>\n", "</tool_call>")
    for mode, prefix in (("required", ""), ("auto", "Let me check. ")):
        par = re.compile(C.tool_call(TOOLS, mode=mode, parallel=True).regex, re.S)
        one = re.compile(C.tool_call(TOOLS, mode=mode, parallel=False).regex, re.S)
        assert par.fullmatch(prefix + hermes(CALLS[:1])) and one.fullmatch(
            prefix + hermes(CALLS[:1]))
        assert par.fullmatch(prefix + two) and par.fullmatch(prefix + three)
        assert not one.fullmatch(prefix + two)
        bad = hermes([("get_weather", {"city": "Paris", "extra": 1})])
        assert not par.fullmatch(prefix + two + "\n" + bad)  # every call obeys its schema
        assert not par.fullmatch(prefix + two + "\nand some text")
    assert C.tool_call(TOOLS, parallel=True) != C.tool_call(TOOLS)  # distinct cache keys


def test_compiled_grammar_lets_a_second_call_through(tiny_engine, constraints):
    """After a complete call the automaton is accepting and may go on (outlines-core alone
    drops the steps out of a state whose text matches: only EOS would follow the first call)."""
    from agentfast.engine import constraints as C

    tok = tiny_engine.tokenizer
    a = C.compile(C.tool_call(TOOLS, parallel=True), tok, tuple(tiny_engine.eos_ids))
    s = a.state0
    for t in tok.encode(hermes(CALLS[:2]), add_special=False):
        s = a.next(s, t)
        assert s >= 0
    assert a.is_accepting(s)


def test_compiled_auto_grammar_lets_a_call_start(tiny_engine, constraints):
    """tool_choice auto with a strict tool: the free text accepts at every character, and the
    step into `<tool_call>` is still allowed."""
    from agentfast.engine import constraints as C

    tok = tiny_engine.tokenizer
    a = C.compile(C.tool_call(TOOLS, mode="auto"), tok, tuple(tiny_engine.eos_ids))
    s = a.state0
    for t in tok.encode("Let me check. " + hermes(CALLS[:1]), add_special=False):
        s = a.next(s, t)
        assert s >= 0
    assert a.is_accepting(s)


def test_strict_parallel_calls_on_the_tiny_model_validate(client, constraints):
    short = {**WEATHER, "properties": {"city": {"type": "string", "maxLength": 8}}}
    tools = [{"type": "function", "function": {**t["function"], "parameters": short}}
             for t in TOOLS]  # a random model would never close an unbounded string
    finishes, counts = [], []
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny", messages=Q, tools=tools, tool_choice="required", max_tokens=150,
            temperature=1.0, seed=seed, parallel_tool_calls=True)
        ch = r.choices[0]
        finishes.append(ch.finish_reason)
        counts.append(len(ch.message.tool_calls or ()))
        cut, tail = ch.finish_reason == "length", (ch.message.content or "").strip()
        # a random model may keep calling up to max_tokens: then the last call, or the start
        # of the next one's tag (left as text), is the only partial part
        assert ch.message.tool_calls and (ch.message.content is None or (
            cut and tail and "<tool_call>".startswith(tail))), ch.message.content
        done = ch.message.tool_calls[:-1] if cut and not tail else ch.message.tool_calls
        for c in done:
            assert c.function.name in ("get_weather", "get_time")
            jsonschema.validate(json.loads(c.function.arguments), short)
    assert "tool_calls" in finishes, (finishes, counts)
    assert max(counts) > 1, (finishes, counts)  # the compiled grammar takes a second call
