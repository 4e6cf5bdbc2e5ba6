"""Tool-call parsing from streamed text: Hermes, Mistral, Llama 3; any chunking; no tag leaks."""

from __future__ import annotations

import json

import pytest

from agentfast.server.tool_parser import ToolParser

HERMES = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
          '"days": [1, 2, {"note": "a } in a string \\" too"}]}}\n</tool_call>\n<tool_call>\n'
          '{"name": "noop", "arguments": {}}\n</tool_call>')


def run(text: str, formats=("hermes",), parallel=True, step=1):
    p = ToolParser(formats, parallel)
    events = []
    for i in range(0, len(text), step):
        events += p.push(text[i:i + step])
    events += p.finish()
    content = "".join(e.text for e in events if e.kind == "content")
    return content, p.calls, events


@pytest.mark.parametrize("step", [1, 2, 3, 5, 8, 1000])
def test_hermes_any_chunking(step):
    content, calls, events = run(HERMES, step=step)
    assert content == "Let me check.\n"
    assert [c["name"] for c in calls] == ["get_weather", "noop"]
    args = json.loads(calls[0]["arguments"])
    assert args["days"][2]["note"] == 'a } in a string " too'
    assert calls[1]["arguments"] == "{}"
    # the streamed fragments add up to the final arguments, per call index
    for i, c in enumerate(calls):
        frags = "".join(e.text for e in events if e.kind == "args" and e.index == i)
        assert frags == c["arguments"]
    kinds = [e.kind for e in events if e.kind != "content"]
    assert kinds[0] == "call" and kinds.count("call") == 2
    assert all(e.id.startswith("call_") for e in events if e.kind == "call")


def test_arguments_stream_before_the_call_ends():
    p = ToolParser()
    p.push('<tool_call>\n{"name": "write", "arguments": {"text": "hello')
    events = p.push(" world")
    assert [(e.kind, e.text) for e in events] == [("args", " world")]


def test_no_tag_leaks_while_streaming():
    p = ToolParser()
    seen = ""
    for ch in "ok <tool_call>\n" + '{"name": "f", "arguments": {"x": 1}}\n</tool_call>':
        seen += "".join(e.text for e in p.push(ch) if e.kind == "content")
        assert "<" not in seen.replace("ok ", "")
    assert seen == "ok "


def test_parallel_false_keeps_the_first_call():
    _, calls, _ = run(HERMES, parallel=False)
    assert [c["name"] for c in calls] == ["get_weather"]


def test_other_key_order_and_string_arguments():
    text = ('<tool_call>{"arguments": {"x": 1}, "name": "f"}</tool_call>'
            '<tool_call>{"name": "g", "arguments": "{\\"y\\": 2}"}</tool_call>')
    content, calls, _ = run(text)
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("f", {"x": 1}),
                                                                        ("g", {"y": 2})]


def test_mistral_and_llama3():
    text = '[TOOL_CALLS] [{"name": "f", "arguments": {"x": "]"}}, {"name": "g", "arguments": {}}]'
    content, calls, _ = run(text, ("hermes", "mistral"))
    assert content == "" and [c["name"] for c in calls] == ["f", "g"]
    text = '<|python_tag|>{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {}}'
    content, calls, _ = run(text, ("hermes", "llama3"))
    assert content == "" and [(c["name"], c["arguments"]) for c in calls] == [
        ("f", '{"x": 1}'), ("g", "{}")]
    # Mistral v11+: [TOOL_CALLS]name[ARGS]{...} per call, any chunking
    text = 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "x": "]"}[TOOL_CALLS]noop[ARGS]{}'
    for step in (1, 3, 1000):
        content, calls, events = run(text, ("hermes", "mistral"), step=step)
        assert content == "Sure." and [(c["name"], json.loads(c["arguments"])) for c in calls] \
            == [("get_weather", {"city": "Paris", "x": "]"}), ("noop", {})]
        assert "".join(e.text for e in events if e.kind == "args" and e.index == 0) == \
            calls[0]["arguments"]
    # Llama 3 JSON only counts at the very start and with a name: other JSON is content
    assert run('{"a": 1}', ("hermes", "llama3"))[:2] == ('{"a": 1}', [])


@pytest.mark.parametrize("text,content", [
    ("a < b, and <tool_ca", "a < b, and <tool_ca"),  # a partial tag at the end is text
    ("<tool_call>not json</tool_call> done", "not json done"),
    ("<tool_call>not json", "not json"),
    ("\n\nplain text\n", "\n\nplain text\n"),
])
def test_text_that_is_not_a_call(text, content):
    assert run(text)[:2] == (content, [])


def test_truncated_call_keeps_what_arrived():
    content, calls, _ = run('<tool_call>\n{"name": "f", "arguments": {"x": "trunc')
    assert content == "" and calls[0]["name"] == "f" and calls[0]["arguments"] == '{"x": "trunc'


def test_a_call_cut_after_complete_ones_leaves_no_text():
    """max_tokens can cut the start of one more call: no tag or JSON piece becomes content."""
    one = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n'
    for cut in ("<too", '<tool_call>\n{"na', "<tool_call>"):
        content, calls, _ = run(one + cut)
        assert content == "" and [c["name"] for c in calls] == ["f"], cut
    # before any call, a partial tag at the end is still text (nothing was called)
    assert run("see <too")[:2] == ("see <too", [])
