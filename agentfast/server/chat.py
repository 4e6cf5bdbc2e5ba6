"""Chat messages -> prompt text and token ids, with tools rendered into the prompt.

Templates that know `tools` (Qwen, Hermes style) get the tools and the assistant `tool_calls`
as structured fields; for the others (SmolLM2's ChatML) the tools are described in a Hermes-style
system prompt, earlier calls are written back as `<tool_call>` text and tool results as
`<tool_response>` user turns. Rendering is append-only: a conversation that grows by messages
grows by tokens, so the session's KV cache is reused (`PromptCache` keeps each session's last
prompt + output tokens and tokenizes only the new text). Knows the tokenizer, not the model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agentfast.engine.tokenizer import Tokenizer

from .protocol import APIError, Message

TOOL_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available "
    "tools: <tools>\n{tools}\n</tools>\nFor each function call return a json object with "
    "function name and arguments within <tool_call></tool_call> XML tags as follows:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_formats(template: str | None) -> tuple[bool, tuple[str, ...]]:
    """(whether the template renders `tools`, the tool-call formats to parse in the output).
    Hermes is always parsed: it is what the injected prompt and the tool-call grammar produce."""
    t = template or ""
    formats = ["hermes"]
    if "[TOOL_CALLS]" in t:
        formats.append("mistral")
    if "<|python_tag|>" in t or "ipython" in t:
        formats.append("llama3")
    return "tools" in t, tuple(formats)


def text_of(m: Message, i: int) -> str:
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    parts = []
    for j, p in enumerate(m.content):
        if p.type not in ("text", "input_text", "output_text") or p.text is None:
            raise APIError(f"messages[{i}].content[{j}].type: {p.type!r} content is not "
                           "supported (text only)", param=f"messages[{i}].content[{j}].type")
        parts.append(p.text)
    return "".join(parts)


def hermes_call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n</tool_call>'


def check_tool_messages(messages: list[Message]) -> None:
    """Every tool message answers a call made by an earlier assistant message."""
    calls: set[str] = set()
    for i, m in enumerate(messages):
        for c in m.tool_calls or ():
            calls.add(c.id)
        if m.role == "tool":
            if not m.tool_call_id:
                raise APIError(f"messages[{i}].tool_call_id: a tool message needs the id of the "
                               "call it answers", param=f"messages[{i}].tool_call_id")
            if m.tool_call_id not in calls:
                raise APIError(f"messages[{i}].tool_call_id: {m.tool_call_id!r} matches no "
                               "tool call of a preceding assistant message",
                               param=f"messages[{i}].tool_call_id")


def _arguments(raw: str, where: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except json.JSONDecodeError as e:
        raise APIError(f"{where}: not valid JSON ({e.msg})", param=where) from None


def to_template(messages: list[Message], tools: list[dict] | None, native: bool) -> list[dict]:
    """OpenAI messages -> the dicts the chat template reads."""
    check_tool_messages(messages)
    out = template_messages(messages, native)
    if tools and not native:
        desc = tool_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = out[0]["content"] + "\n\n" + desc
        else:
            out.insert(0, {"role": "system", "content": desc})
    return out


def tool_prompt(tools: list[dict]) -> str:
    """The Hermes-style system prompt that describes `tools` to a template without them."""
    return TOOL_SYSTEM.format(tools="\n".join(json.dumps(t) for t in tools))


def template_messages(messages: list[Message], native: bool, offset: int = 0) -> list[dict]:
    """The template dicts of `messages`, unchecked and without the tool prompt (to_template
    adds both). Consecutive tool messages become one user message when not `native`.
    `offset`: the index of messages[0] in the conversation (for error messages)."""
    out: list[dict[str, Any]] = []
    for j, m in enumerate(messages):
        i = offset + j
        text = text_of(m, i)
        role = "system" if m.role == "developer" else m.role
        if role == "assistant" and m.tool_calls:
            if native:
                calls = [{"id": c.id, "type": "function", "function": {
                    "name": c.function.name, "arguments": _arguments(
                        c.function.arguments, f"messages[{i}].tool_calls[{k}].function.arguments"
                    )}} for k, c in enumerate(m.tool_calls)]
                out.append({"role": "assistant", "content": text, "tool_calls": calls})
            else:
                body = "\n".join(hermes_call(c.function.name, c.function.arguments or "{}")
                                 for c in m.tool_calls)
                out.append({"role": "assistant", "content": text + body})
        elif role == "tool" and not native:
            block = f"<tool_response>\n{text}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool": True})
        elif role == "tool":
            out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id,
                        **({"name": m.name} if m.name else {})})
        else:
            out.append({"role": role, "content": text})
    for d in out:
        d.pop("_tool", None)
    return out


def session_id(rendered: list[dict], tools: list[dict] | None, user: str | None,
               header: str | None) -> str:
    """The session a request's KV lives in: the `x-session-id` header, else the `user` field,
    else a hash of the conversation up to its first user message (plus the tools)."""
    if header:
        return f"h:{header}"
    if user:
        return f"u:{user}"
    head: list[dict] = []
    for m in rendered:
        head.append(m)
        if m["role"] == "user":
            break
    blob = json.dumps([head, tools], sort_keys=True, default=str)
    return "c:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Prompt:
    text: str
    ids: list[int]
    session: str


class PromptCache:
    """Per session: the text and tokens of the last prompt + output. A new prompt whose text
    starts with that text keeps those tokens and tokenizes only the rest (append-only)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._d: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self._lock = threading.Lock()  # prompts are built in worker threads

    def encode(self, tok: Tokenizer, session: str, text: str) -> list[int]:
        with self._lock:
            hit = self._d.get(session)
        if hit and text.startswith(hit[0]) and len(text) > len(hit[0]):
            return hit[1] + tok.encode(text[len(hit[0]):], add_special=False)
        return tok.encode_rendered(text)

    def __contains__(self, session: str) -> bool:
        return session in self._d

    def forget(self, session: str) -> None:
        with self._lock:
            self._d.pop(session, None)

    def remember(self, session: str, text: str, ids: list[int]) -> None:
        with self._lock:
            self._d[session] = (text, list(ids))
            self._d.move_to_end(session)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def after(self, tok: Tokenizer, prompt: Prompt, out_ids: list[int], stop: Any) -> None:
        """Remember prompt + output when the output's text is exactly what the client will
        send back (ended by a stop token or the length limit, not cut by a stop string)."""
        if isinstance(stop, str):
            self.remember(prompt.session, prompt.text, prompt.ids)
            return
        ids = out_ids + ([stop] if isinstance(stop, int) else [])
        text = tok.decode(ids, skip_special=False)
        self.remember(prompt.session, prompt.text + text, prompt.ids + ids)


def build_prompt(tok: Tokenizer, cache: PromptCache, messages: list[Message],
                 tools: list[dict] | None, user: str | None, header: str | None,
                 session: str | None = None) -> Prompt:
    """`session` (a stored response's, for previous_response_id) overrides the derived id
    unless the client names one in the header."""
    native, _ = template_formats(tok.chat_template)
    rendered = to_template(messages, tools, native)
    text = tok.render_chat(rendered, add_generation_prompt=True,
                           tools=tools if native and tools else None)
    sid = session if session and not header else session_id(rendered, tools, user, header)
    return Prompt(text, cache.encode(tok, sid, text), sid)
