"""Chat prompts of the agent's direct path, grown per session: each turn converts, renders and
tokenizes only the messages appended since the last one, and the text and token ids are those
of rendering the whole conversation (what `agentfast.server.chat.build_prompt` gives).

Rendering only the new messages: they are rendered behind a context of the conversation's first
template message (templates test `loop.first` or `messages[0]`), and the context's own rendering
(kept per session) is cut off the front; templates that look at the previous message's role get
its last message in the context too. That is exact only for templates whose text for a message
depends on nothing further away, so each template (with tools or without) is first checked on
a probe conversation (system or not, tool calls, parallel calls and their results, answers,
more user messages): grown one message at a time and a turn at a time, every prompt must equal
the whole conversation rendered, with the first message as context, else with the first and
the last, else that template is always rendered whole. A turn that does not only append
(edited history, other tools) is rendered whole too. Knows the server's message conversion and
prompt cache, not the engine.

Stencils: where a template grows with the first message alone as context, a new message of
only a role and a non-empty content is not rendered by the template at all: its text is the
role's stencil, prefix + content + suffix, learned once per (context, tools or not, role) by
rendering a marker as the content and checked on sample contents (whitespace at both ends,
blank lines, think, tool-call and tool-response blocks); a role whose template treats the
content otherwise (trims it, looks inside it) gets no stencil and is rendered. On the agent's
turns that skips the sandboxed template, the largest part of building a prompt, which runs
cold after a tool (2-core VM, the model paced like the H200's: 0.5 ms of the 0.7 ms build
after a pytest run; host time per turn 0.85-0.93 -> 0.68-0.77 ms median,
bench/results/agent-loop-vm-20261129-s8).
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import ByteLevel

from agentfast.engine.errors import RequestError
from agentfast.engine.tokenizer import Tokenizer
from agentfast.server.chat import (
    Prompt,
    PromptCache,
    template_formats,
    template_messages,
    to_template,
)
from agentfast.server.protocol import Message


@dataclass
class _Conv:
    """One session's conversation as rendered so far."""

    seen: list[dict]  # the caller's message dicts (compared by identity)
    msgs: list[Message]
    tools: list[dict] | None  # rendered with these (compared by identity)
    tmpl: list[dict]  # template dicts; empty: never grown, always rendered whole
    text: str  # rendered, without the generation prompt
    calls: set[str] = field(default_factory=set)  # ids of the tool calls made so far
    first: str | None = None  # tmpl[0] rendered alone, without the generation prompt


@dataclass(frozen=True)
class _Growth:
    """How a template grows exactly."""

    gen: str  # its generation prompt (what add_generation_prompt appends)
    last: bool  # the new messages need the last message before them as context


# (template source, tools or not) -> how it grows, or None: rendered whole
_CHECKED: dict[tuple[str, bool], _Growth | None] = {}

_MARK = "\x00agentfast-content\x00"  # a stencil's content while it is learned
# contents a stencil must reproduce (templates that trim the content or look inside it differ)
_STENCIL_SAMPLES = ("x", "  two words \n", "a\n\nb\n", "<think>\nhm\n</think>\n\nok",
                    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
                    "<tool_response>\nr\n</tool_response>")


class ChatPrompts:
    """Per session: the conversation so far, rendered, and (in a PromptCache) its tokens."""

    def __init__(self, tok: Tokenizer, capacity: int = 64):
        self.tok, self.capacity = tok, capacity
        self.native, _ = template_formats(tok.chat_template)
        self.cache = PromptCache(capacity)
        self._byte_level = isinstance(tok.tok.decoder, ByteLevel)  # see after()
        self._special = frozenset(i for i, t in tok.tok.get_added_tokens_decoder().items()
                                  if t.special)
        self._texts: dict[int, str] = {}  # stop token -> its text
        self._convs: OrderedDict[str, _Conv] = OrderedDict()
        self._heads: dict[tuple[str, int], tuple[Any, _Conv, list[int]]] = {}
        # (context's text, tools or not, role) -> (prefix, suffix), or None: rendered
        self._stencils: dict[tuple[str, bool, str], tuple[str, str] | None] = {}

    def build(self, session: str, messages: list[dict], tools: list[dict] | None) -> Prompt:
        """The prompt (text, ids, session id) of `messages`: the new ones appended to what
        this session rendered last turn where possible, else the whole conversation."""
        sid = f"h:{session}"  # what server.chat.session_id gives for an x-session-id header
        conv = self._convs.get(session)
        text = None
        if conv is not None and conv.tools is tools and _extends(conv.seen, messages):
            text = self._grow(conv, messages[len(conv.seen):])
        elif conv is None and sid not in self.cache:
            conv, text = self._start(sid, messages, tools)
        if text is None:
            conv, text = self._whole(messages, tools)
        self._convs[session] = conv
        self._convs.move_to_end(session)
        while len(self._convs) > self.capacity:
            self._convs.popitem(last=False)
        return Prompt(text, self.cache.encode(self.tok, sid, text), sid)

    def after(self, prompt: Prompt, out_ids: list[int], stop: Any, text: str | None = None
              ) -> None:
        """Remember the prompt and the output that ends it (`PromptCache.after`). `text`: the
        output's text as the engine streamed it (`GenerationResult.text`): with a byte-level
        decoder, no special token in the output and no U+FFFD (valid UTF-8), it is the decoded
        output, which is then not decoded again."""
        if (text is not None and self._byte_level and not isinstance(stop, str)
                and "\ufffd" not in text and self._special.isdisjoint(out_ids)):
            ids = out_ids
            if isinstance(stop, int):
                ids = [*out_ids, stop]
                text += self._token_text(stop)
            self.cache.remember(prompt.session, prompt.text + text, prompt.ids + ids)
            return
        self.cache.after(self.tok, prompt, out_ids, stop)

    def _token_text(self, i: int) -> str:
        t = self._texts.get(i)
        if t is None:
            t = self._texts[i] = self.tok.decode([i], skip_special=False)
        return t

    def release(self, session: str) -> None:
        self._convs.pop(session, None)
        self.cache.forget(f"h:{session}")

    # ---- whole, head, grown ----------------------------------------------------------------

    def _render(self, tmpl: list[dict], gen: bool, tools: list[dict] | None) -> str:
        return self.tok.render_chat(tmpl, add_generation_prompt=gen,
                                    tools=tools if self.native and tools else None)

    def _whole(self, messages: list[dict], tools: list[dict] | None) -> tuple[_Conv, str]:
        msgs = [Message.model_validate(m) for m in messages]
        tmpl = to_template(msgs, tools, self.native)  # checks tool messages: errors name them
        text = self._render(tmpl, True, tools)
        growth = self._checked(tools)
        if growth is None or not text.endswith(growth.gen):
            return _Conv(list(messages), msgs, tools, [], ""), text
        calls = {c.id for m in msgs for c in m.tool_calls or ()}
        return _Conv(list(messages), msgs, tools, tmpl, text[:len(text) - len(growth.gen)],
                     calls), text

    def _start(self, sid: str, messages: list[dict], tools: list[dict] | None
               ) -> tuple[_Conv | None, str | None]:
        """A new session: its head (the messages before the first user message, with the tool
        prompt) is rendered and tokenized once per agent and seeds the prompt cache; the rest
        is grown onto it, so the first turn renders and tokenizes only the task."""
        n = next((i for i, m in enumerate(messages) if m.get("role") == "user"), len(messages))
        key = (json.dumps(messages[:n], sort_keys=True, default=str), id(tools))
        hit = self._heads.get(key)
        if hit is None or hit[0] is not tools:
            msgs = [Message.model_validate(m) for m in messages[:n]]
            tmpl = to_template(msgs, tools, self.native)
            try:
                text = self._render(tmpl, False, tools) if tmpl else ""
            except RequestError:
                text = ""
            if not text:
                return None, None
            calls = {c.id for m in msgs for c in m.tool_calls or ()}
            if len(self._heads) >= 16:
                self._heads.clear()
            hit = self._heads[key] = (tools, _Conv(list(messages[:n]), msgs, tools, tmpl, text,
                                                   calls), self.tok.encode_rendered(text))
        _, head, ids = hit
        self.cache.remember(sid, head.text, ids)
        growth = self._checked(tools)
        if head.first is None and head.tmpl and growth is not None and not growth.last:
            # the first message rendered alone: every session of this head grows on it
            with contextlib.suppress(RequestError):
                head.first = self._render(head.tmpl[:1], False, tools)
        conv = _Conv(list(messages[:n]), list(head.msgs), tools, list(head.tmpl), head.text,
                     set(head.calls), head.first)
        return conv, self._grow(conv, messages[n:])

    def _grow(self, conv: _Conv, new: list[dict]) -> str | None:
        """Append `new` to `conv` and return the prompt; None (conv unchanged) where the
        template or the messages do not allow it."""
        growth = self._checked(conv.tools)
        if growth is None or not conv.tmpl:
            return None
        msgs = [Message.model_validate(m) for m in new]
        calls = set(conv.calls)
        for m in msgs:
            calls.update(c.id for c in m.tool_calls or ())
            if m.role == "tool" and m.tool_call_id not in calls:
                return None  # rendered whole: to_template raises the error
        if msgs and not self.native and msgs[0].role == "tool" and conv.msgs[-1].role == "tool":
            return None  # it would join the last message's <tool_response> block
        tmpl = template_messages(msgs, self.native, offset=len(conv.msgs))
        gen = growth.gen
        try:
            if growth.last and len(conv.tmpl) > 1:
                ctx = [conv.tmpl[0], conv.tmpl[-1]]
                head = self._render(ctx, False, conv.tools)
            else:
                ctx = conv.tmpl[:1]
                if conv.first is None:
                    conv.first = self._render(ctx, False, conv.tools)
                head = conv.first
            new_text = None if growth.last else self._stenciled(ctx, head, conv.tools, tmpl)
            if new_text is None:
                whole = self._render(ctx + tmpl, True, conv.tools)
                if not whole.startswith(head) or not whole.endswith(gen):
                    return None
                new_text = whole[len(head):len(whole) - len(gen)]
        except RequestError:
            return None
        text = conv.text + new_text + gen
        conv.seen.extend(new)
        conv.msgs.extend(msgs)
        conv.tmpl.extend(tmpl)
        conv.calls = calls
        conv.text = text[:len(text) - len(gen)]
        return text

    # ---- stencils ----------------------------------------------------------------------------

    def _stenciled(self, ctx: list[dict], head: str, tools: list[dict] | None,
                   tmpl: list[dict]) -> str | None:
        """The text of the template messages `tmpl` behind `ctx` from the roles' stencils, or
        None where one of them is not a plain (role, non-empty content) message or its role
        has no stencil."""
        parts = []
        for d in tmpl:
            content = d.get("content")
            if len(d) != 2 or not isinstance(content, str) or not content:
                return None
            key = (head, bool(tools), d["role"])
            if key not in self._stencils:
                if len(self._stencils) >= 64:
                    self._stencils.clear()
                self._stencils[key] = self._learn(ctx, head, tools, d["role"])
            st = self._stencils[key]
            if st is None:
                return None
            parts += (st[0], content, st[1])
        return "".join(parts)

    def _learn(self, ctx: list[dict], head: str, tools: list[dict] | None,
               role: str) -> tuple[str, str] | None:
        """The role's (prefix, suffix) behind `ctx` (rendered: `head`), or None where the
        template does not put a content in verbatim."""
        try:
            marked = self._render(ctx + [{"role": role, "content": _MARK}], False, tools)
            if not marked.startswith(head) or marked.count(_MARK) != 1:
                return None
            pre, suf = marked[len(head):].split(_MARK)
            for c in _STENCIL_SAMPLES:
                if self._render(ctx + [{"role": role, "content": c}], False, tools) != (
                        head + pre + c + suf):
                    return None
        except RequestError:
            return None
        return pre, suf

    # ---- the probe -------------------------------------------------------------------------

    def _checked(self, tools: list[dict] | None) -> _Growth | None:
        """How the template grows exactly (probed once per template, with tools and without),
        or None: it is rendered whole."""
        key = (self.tok.chat_template or "", bool(tools))
        if key not in _CHECKED:
            _CHECKED[key] = None  # while probing, and for good if the probe fails
            _CHECKED[key] = self._probe(tools)
        return _CHECKED[key]

    def _probe(self, tools: list[dict] | None) -> _Growth | None:
        try:
            tmpl = to_template([Message.model_validate(m) for m in PROBE], tools, self.native)
            full, bare = self._render(tmpl, True, tools), self._render(tmpl, False, tools)
        except RequestError:
            return None
        if not full.startswith(bare):
            return None
        key = (self.tok.chat_template or "", bool(tools))
        for last in (False, True):
            growth = _CHECKED[key] = _Growth(full[len(bare):], last)  # tried by growing
            if all(self._grows_exactly(conversation, batches, tools)
                   for conversation, turns in ((PROBE, _TURNS), (PROBE[1:], _TURNS_NO_SYSTEM))
                   for batches in (turns, None)):
                return growth
        return None

    def _grows_exactly(self, conversation: list[dict], batches: list[int] | None,
                       tools: list[dict] | None) -> bool:
        """Grow `conversation` by the given batch ends (None: one message at a time) and
        compare every prompt with the whole conversation rendered."""
        ends = batches or list(range(1, len(conversation) + 1))
        conv: _Conv | None = None
        for end in ends:
            messages = conversation[:end]
            text = None if conv is None else self._grow(conv, messages[len(conv.seen):])
            if text is None:
                conv, text = self._whole(messages, tools)
            try:
                whole = self._render(to_template([Message.model_validate(m) for m in messages],
                                                 tools, self.native), True, tools)
            except RequestError:
                return False
            if text != whole:
                return False
        return True


def _extends(seen: list[dict], messages: list[dict]) -> bool:
    """`messages` starts with the very dicts of `seen`."""
    n = len(seen)
    return n <= len(messages) and all(a is b for a, b in zip(seen, messages, strict=False))


def _call(i: str, name: str, arguments: dict) -> dict:
    return {"id": i, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


PROBE: list[dict] = [
    {"role": "system", "content": "You are a probe."},
    {"role": "user", "content": "Fix the test."},
    {"role": "assistant", "content": None, "tool_calls": [_call("c1", "ls", {"path": "."})]},
    {"role": "tool", "tool_call_id": "c1", "content": "a.py\nb.py"},
    {"role": "assistant", "content": "Reading both.", "tool_calls": [
        _call("c2", "read", {"path": "a.py"}), _call("c3", "read", {"path": "b.py"})]},
    {"role": "tool", "tool_call_id": "c2", "content": "x = 1"},
    {"role": "tool", "tool_call_id": "c3", "content": "y = 2"},
    {"role": "assistant", "content": "<think>\nok\n</think>\n\nChecking.",
     "tool_calls": [_call("c4", "run", {"cmd": "pytest"})]},
    {"role": "tool", "tool_call_id": "c4", "content": "1 passed"},
    {"role": "user", "content": "And now?"},  # a reasoning answer two messages back
    {"role": "assistant", "content": "<think>\nhm\n</think>\n\nNothing else."},
    {"role": "user", "content": "Thanks."},
]
# the agent's batches (a task; a call and its result; parallel calls and results; ...) and a
# chat's (an answer and the next question)
_TURNS = [2, 4, 7, 9, 10, 12]
_TURNS_NO_SYSTEM = [t - 1 for t in _TURNS]
