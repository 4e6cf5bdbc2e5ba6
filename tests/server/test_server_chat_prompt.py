"""Messages -> prompt: append-only token growth, tool rendering (injected or by the template),
tool-message checks, session ids."""

from __future__ import annotations

import dataclasses

import pytest

from agentfast.server.chat import PromptCache, build_prompt, session_id, to_template
from agentfast.server.protocol import APIError, Message

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]
QWEN_LIKE = (  # a template that renders tools itself (the Qwen / Hermes way)
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    "{{ c.function | tojson }}\n</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def msgs(*items: dict) -> list[Message]:
    return [Message.model_validate(m) for m in items]


def conversation() -> list[dict]:
    return [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Read src/main.py"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "read_file", "arguments": '{"path": "src/main.py"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "print('hi')"},
    ]


def test_growing_conversation_grows_by_tokens(tiny_engine):
    tok, cache = tiny_engine.tokenizer, PromptCache()
    turn1 = [{"role": "user", "content": "Read the file src/main.py"}]
    p1 = build_prompt(tok, cache, msgs(*turn1), None, None, None)
    out = tok.encode("Sure, here it is.") + [tok.eos_ids[0]]  # what the model "generated"
    cache.after(tok, p1, out[:-1], out[-1])
    turn2 = turn1 + [{"role": "assistant", "content": "Sure, here it is."},
                     {"role": "user", "content": "Now edit it."}]
    p2 = build_prompt(tok, cache, msgs(*turn2), None, None, None)
    assert p2.session == p1.session
    assert p2.ids[:len(p1.ids) + len(out)] == p1.ids + out
    assert tok.decode(p2.ids, skip_special=False) == p2.text


def test_tools_without_template_support_are_injected_as_hermes(tiny_engine):
    rendered = to_template(msgs(*conversation()), TOOLS, native=False)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\n") and "<tools>" in rendered[0][
        "content"] and '"name": "read_file"' in rendered[0]["content"]
    assert rendered[2]["content"] == ('<tool_call>\n{"name": "read_file", "arguments": '
                                      '{"path": "src/main.py"}}\n</tool_call>')
    assert rendered[3]["content"] == "<tool_response>\nprint('hi')\n</tool_response>"


def test_tools_through_a_template_that_supports_them(tiny_engine):
    tok = dataclasses.replace(tiny_engine.tokenizer, chat_template=QWEN_LIKE)
    p = build_prompt(tok, PromptCache(), msgs(*conversation()), TOOLS, None, None)
    assert p.text.startswith('<|im_start|>system\n# Tools\n{"type": "function"')
    assert ('<tool_call>\n{"name": "read_file", "arguments": {"path": "src/main.py"}}\n'
            '</tool_call>') in p.text
    assert "<|im_start|>tool\nprint('hi')<|im_end|>" in p.text


@pytest.mark.parametrize("bad,param", [
    ({"role": "tool", "tool_call_id": "call_9", "content": "x"}, "messages[4].tool_call_id"),
    ({"role": "tool", "content": "x"}, "messages[4].tool_call_id"),
])
def test_tool_message_needs_a_matching_call(bad, param):
    with pytest.raises(APIError) as e:
        to_template(msgs(*conversation(), bad), TOOLS, native=False)
    assert e.value.param == param and e.value.status == 400


def test_session_ids():
    a = [{"role": "system", "content": "s"}, {"role": "user", "content": "one"}]
    b = a + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "two"}]
    assert session_id(a, None, None, None) == session_id(b, None, None, None)
    assert session_id(a, None, None, None) != session_id(a, TOOLS, None, None)
    assert session_id(a, None, "alice", None) == "u:alice"
    assert session_id(a, None, "alice", "run-7") == "h:run-7"
