"""Incremental chat prompts (agent.prompt.ChatPrompts): grown turn by turn, the prompt's text
and token ids equal rendering and tokenizing the whole conversation (server.chat.build_prompt),
for multi-turn histories with tool calls and parallel calls, on templates that grow with the
first message as context, that also need the previous message, and that do not grow at all
(rendered whole); edited histories, changed tools and bad tool messages fall back to the whole
render (and its errors)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agentfast.agent import prompt as P
from agentfast.agent.prompt import ChatPrompts
from agentfast.server.chat import PromptCache, build_prompt, hermes_call
from agentfast.server.protocol import APIError, Message

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file", "strict": True,
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"], "additionalProperties": False}}}]

# ChatML with a default system message when the first is not one (SmolLM2's rule)
DEFAULT_SYSTEM = (
    "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou help.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")
# renders tools itself; consecutive tool results share one user turn, so a tool message looks
# at the message before it and after it (the Qwen 2.5 way)
GROUPED_TOOLS = (
    "{% if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}"
    "{{ messages[0].content }}\n{% endif %}# Tools\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}<|im_end|>\n{% elif messages[0].role == 'system' %}<|im_start|>system\n"
    "{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}"
    "<|im_end|>\n{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>"
    "{% endfor %}<|im_end|>\n{% elif m.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# not append-only: answers before the last user message lose their reasoning (Qwen 3's rule),
# and that message may come after tool results (renders tools itself: they stay role "tool")
DROPS_REASONING = (
    "{% if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
    "<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and loop.index0 < ns.last %}"
    "{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _call(i: str, path: str) -> dict:
    return {"id": i, "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": path})}}


def session(system: bool) -> list[list[dict]]:
    """An agent's conversation as the batches it appends, turn by turn."""
    head = [{"role": "system", "content": "You are a coding agent."}] if system else []
    return [
        [*head, {"role": "user", "content": "Fix the test in test_calc.py."}],
        [{"role": "assistant", "content": None, "tool_calls": [_call("c1", "calc.py")]},
         {"role": "tool", "tool_call_id": "c1", "content": "def add(a, b):\n    return a - b"}],
        [{"role": "assistant", "content": "Both files.",
          "tool_calls": [_call("c2", "calc.py"), _call("c3", "test_calc.py")]},
         {"role": "tool", "tool_call_id": "c2", "content": "x = 1"},
         {"role": "tool", "tool_call_id": "c3", "content": "assert add(2, 3) == 5"}],
        [{"role": "assistant", "content": "<think>\nsubtracts\n</think>\n\nFixed it."},
         {"role": "user", "content": "Run the tests again."}],
        [{"role": "assistant", "content": None, "tool_calls": [_call("c4", "calc.py")]},
         {"role": "tool", "tool_call_id": "c4", "content": "2 passed"}],
    ]


def whole(tok, messages: list[dict], tools) -> tuple[str, list[int]]:
    p = build_prompt(tok, PromptCache(), [Message.model_validate(m) for m in messages], tools,
                     None, "s")
    return p.text, p.ids


def answer(tok, batch: list[dict]) -> list[int]:
    """What the model generated for the batch's assistant message, as the engine returns it:
    its tokens (the template's text of the message: Hermes calls for a template without
    tools) and then the stop token."""
    m = batch[0]
    text = m["content"] or ""
    if m.get("tool_calls"):
        text += "\n".join(hermes_call(c["function"]["name"], c["function"]["arguments"])
                          for c in m["tool_calls"])
    return tok.encode(text)


@pytest.mark.parametrize("template,grows,last", [
    (None, True, False), (DEFAULT_SYSTEM, True, False), (GROUPED_TOOLS, True, True),
    (DROPS_REASONING, False, False)])
@pytest.mark.parametrize("tools", [TOOLS, None])
@pytest.mark.parametrize("system", [True, False])
def test_grown_prompt_equals_whole_render(tiny_engine, template, grows, last, tools, system):
    tok = tiny_engine.tokenizer
    if template is not None:
        tok = dataclasses.replace(tok, chat_template=template)
    prompts = ChatPrompts(tok)
    growth = prompts._checked(tools)
    assert (growth is not None) == grows and (growth is None or growth.last == last)
    messages: list[dict] = []
    p = None
    for i, batch in enumerate(session(system)):
        if p is not None:  # the model's answer: its tokens and the stop token, as the engine
            prompts.after(p, answer(tok, batch), tok.eos_ids[0])  # reports them
        messages += batch
        p = prompts.build("a", messages, tools)
        assert (p.text, p.ids) == whole(tok, messages, tools), f"turn {i + 1}"
        assert p.session == "h:a"
    conv = prompts._convs["a"]
    assert bool(conv.tmpl) == grows  # grown to the end, or always rendered whole


def test_growing_renders_and_tokenizes_only_the_new_messages(tiny_engine, monkeypatch):
    tok = tiny_engine.tokenizer
    prompts = ChatPrompts(tok)
    prompts._checked(TOOLS)  # probed once per template, outside the turns below
    turns = session(True)
    messages = list(turns[0])
    p = prompts.build("a", messages, TOOLS)
    rendered: list[int] = []
    encoded: list[str] = []
    render, encode = type(tok).render_chat, type(tok).encode
    monkeypatch.setattr(type(tok), "render_chat",
                        lambda self, m, *a, **k: rendered.append(len(m)) or render(self, m, *a,
                                                                                     **k))
    monkeypatch.setattr(type(tok), "encode",
                        lambda self, t, *a, **k: encoded.append(t) or encode(self, t, *a, **k))
    per_turn = []
    for batch in turns[1:]:
        prompts.after(p, answer(tok, batch), tok.eos_ids[0])
        messages += batch
        n = len(rendered)
        p = prompts.build("a", messages, TOOLS)
        per_turn.append(rendered[n:])
        assert p.text.endswith(encoded[-1])  # only the text after the last output tokenized
    # no turn renders the conversation: the new messages come from the roles' stencils, each
    # learned once behind the first message (a marker and the samples: 1 + 6 renders of 2
    # messages): turn 2 learns the assistant's (the user's, which tool results use too, came
    # with the task in turn 1), the later turns render nothing
    learn = [2] * (1 + len(P._STENCIL_SAMPLES))
    assert per_turn == [learn, [], [], []]
    # (the answers' text is decoded once, by after(); nothing before it is tokenized again)
    assert all(len(t) < 300 for t in encoded)
    # a role whose template trims the content gets no stencil: rendered as before
    trims = dataclasses.replace(tok, chat_template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% endif %}"))
    tp = ChatPrompts(trims)
    msgs = list(turns[0])
    q = tp.build("b", msgs, TOOLS)
    for batch in turns[1:]:
        tp.after(q, answer(trims, batch), trims.eos_ids[0])
        msgs += batch
        q = tp.build("b", msgs, TOOLS)
        assert (q.text, q.ids) == whole(trims, msgs, TOOLS)
    assert tp._stencils and all(v is None for v in tp._stencils.values()), tp._stencils


def test_new_session_starts_from_the_cached_head(tiny_engine, monkeypatch):
    tok = tiny_engine.tokenizer
    prompts = ChatPrompts(tok)
    rendered: list[int] = []
    render = type(tok).render_chat
    monkeypatch.setattr(type(tok), "render_chat",
                        lambda self, m, *a, **k: rendered.append(len(m)) or render(self, m, *a,
                                                                                     **k))
    for sid in ("a", "b", "c"):  # the later sessions tokenize only their task
        msgs = session(True)[0]
        n = len(rendered)
        p = prompts.build(sid, [dict(m) for m in msgs], TOOLS)
        assert (p.text, p.ids) == whole(tok, msgs, TOOLS)
        if sid != "a":  # the head, its first message alone and the user's stencil: all kept
            assert rendered[n:] == [len(msgs)]  # (the check's whole render, nothing else)
    assert len(prompts._heads) == 1


def test_edited_history_and_other_tools_are_rendered_whole(tiny_engine):
    tok = tiny_engine.tokenizer
    prompts = ChatPrompts(tok)
    turns = session(True)
    messages = turns[0] + turns[1]
    prompts.build("a", messages, TOOLS)
    edited = [dict(m) for m in messages]
    edited[1]["content"] = "Fix the other test."
    p = prompts.build("a", edited, TOOLS)
    assert (p.text, p.ids) == whole(tok, edited, TOOLS)
    p = prompts.build("a", edited, None)  # the final structured turn drops the tools
    assert (p.text, p.ids) == whole(tok, edited, None)
    prompts.release("a")
    assert "a" not in prompts._convs and "h:a" not in prompts.cache


def test_bad_tool_message_raises_as_the_whole_render_does(tiny_engine):
    tok = tiny_engine.tokenizer
    prompts = ChatPrompts(tok)
    messages = list(session(True)[0])
    prompts.build("a", messages, TOOLS)
    messages.append({"role": "tool", "tool_call_id": "nope", "content": "x"})
    with pytest.raises(APIError) as e:
        prompts.build("a", messages, TOOLS)
    assert e.value.param == "messages[2].tool_call_id"


def test_probe_result_is_kept_per_template(tiny_engine):
    tok = dataclasses.replace(tiny_engine.tokenizer, chat_template=DEFAULT_SYSTEM)
    ChatPrompts(tok)._checked(None)
    assert P._CHECKED[(DEFAULT_SYSTEM, False)] is not None


def test_after_with_the_streamed_text_remembers_what_decoding_gives(tiny_engine, monkeypatch):
    """after(..., text=the engine's streamed text) skips decoding the output where that text is
    exact (byte-level decoder, no special token, valid UTF-8) and decodes otherwise: either
    way the cache holds what PromptCache.after stores."""
    from agentfast.engine import SamplingParams
    from agentfast.engine.tokenizer import IncrementalDecoder
    from agentfast.server.chat import Prompt

    tok = tiny_engine.tokenizer
    multi = tok.encode("héllo wörld ✓ 日本")
    special = sorted(ChatPrompts(tok)._special)
    assert special and ChatPrompts(tok)._byte_level
    cases = [(tok.encode("def f():\n    return 1"), tok.eos_ids[0]), (multi, None),
             (multi[1:], tok.eos_ids[0]),  # may start inside a character: U+FFFD
             (tok.encode("a b") + [special[0]] + tok.encode("c"), tok.eos_ids[0])]
    for seed in range(8):  # and what the engine streams for random outputs
        r = tiny_engine.generate(tok.encode("hello"), SamplingParams(max_tokens=12, seed=seed,
                                                                     temperature=1.5))
        cases.append((r.token_ids, r.stop))
    decoded = []
    decode = type(tok).decode
    monkeypatch.setattr(type(tok), "decode", lambda self, ids, *a, **k: decoded.append(
        list(ids)) or decode(self, ids, *a, **k))
    fast = 0
    for ids, stop in cases:
        d = IncrementalDecoder(tok)
        text = "".join(d.push(t) for t in ids) + d.flush()  # what the engine streams
        p = Prompt("PROMPT", [7, 8], "h:s")
        plain, given = PromptCache(), ChatPrompts(tok)
        plain.after(tok, p, ids, stop)
        given._texts = {t: decode(tok, [t], skip_special=False) for t in tok.eos_ids}
        decoded.clear()
        given.after(p, ids, stop, text)
        assert given.cache._d == plain._d, (ids, stop)
        fast += not decoded
    assert 2 <= fast < len(cases)  # the first two at least; the special token case decodes
