"""The agent's fast path to an Engine in the same process: the server's own prompt rendering
(chat template, injected tool prompt, append-only token cache), tool-call grammar, tool-call
parser and scheduler (one generation at a time per engine, shared with any server on it), but
no HTTP, JSON, server-sent events or `openai` client objects in between.

What it saves per turn is host time: the openai client's request transform and per-chunk
pydantic objects, the ASGI round trip, and above all the tool grammar, which the server builds
again from the tool schemas on every request (tens of ms) and which is built here once per
(tools, tool_choice). The output is the same as through `agentfast.AsyncOpenAI`: same prompt
tokens, same constraint, same parser. Errors in the request (context overflow, a bad schema)
raise `APIError` from `agentfast.server.protocol`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agentfast.server.chat import (
    PromptCache,
    build_prompt,
    session_id,
    template_formats,
    to_template,
)
from agentfast.server.params import (
    DEFAULT_TEMPERATURE,
    constraint_for,
    max_new_tokens,
    precompile,
    stops_of,
)
from agentfast.server.protocol import Message, ResponseFormat
from agentfast.server.scheduler import Done, Step, Work, scheduler_for
from agentfast.server.streaming import turn
from agentfast.server.tool_parser import ToolParser

from .agent import Delta

SETTINGS = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
            "parallel_tool_calls"}


class EngineChat:
    """Chat turns straight on `engine` (see the module doc). One per agent; safe to have many
    on one engine (they queue on its one scheduler)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.scheduler = scheduler_for(engine)
        self.prompts = PromptCache()
        self.native, self.formats = template_formats(engine.tokenizer.chat_template)
        self._constraints: dict[tuple, Any] = {}
        self._by_id: dict[tuple, tuple[Any, Any, Any]] = {}
        self._heads: dict[str, list[int]] = {}  # rendered head (system + tools) -> its tokens
        self._converted: dict[str, tuple[list[dict], list[Message]]] = {}

    def _messages(self, session: str, messages: list[dict]) -> list[Message]:
        """The protocol messages, converting only those appended since the last turn."""
        seen, out = self._converted.get(session, ([], []))
        n = len(seen)
        if n > len(messages) or any(a is not b for a, b in zip(seen, messages[:n],
                                                                strict=False)):
            seen, out, n = [], [], 0
        for m in messages[n:]:
            seen.append(m)
            out.append(Message.model_validate(m))
        self._converted[session] = (seen, out)
        while len(self._converted) > 64:  # the oldest sessions go
            del self._converted[next(iter(self._converted))]
        return out

    def _seed(self, session: str, messages: list[Message], tools: list[dict] | None) -> None:
        """A new session starts from the tokens of its head (the messages before the first
        user message, with the tool prompt), tokenized once per agent: the first turn then
        tokenizes only the task. The prompt cache checks that the head is a prefix of the
        rendered prompt, so a template for which it is not falls back to a full encode."""
        head = []
        for m in messages:
            if m.role == "user":
                break
            head.append(m)
        rendered = to_template(head, tools, self.native)
        if not rendered:
            return
        tok = self.engine.tokenizer
        text = tok.render_chat(rendered, add_generation_prompt=False,
                               tools=tools if self.native and tools else None)
        ids = self._heads.get(text)
        if ids is None:
            if len(self._heads) >= 16:
                self._heads.clear()
            ids = self._heads[text] = tok.encode_rendered(text)
        self.prompts.remember(session_id([], None, None, session), text, ids)

    def _constraint(self, tools: list[dict] | None, tool_choice: Any,
                    response_format: dict | None, parallel: bool) -> tuple[Any, str]:
        """The request's constraint, built and compiled once per (tools, tool_choice,
        response_format): looked up by the objects' identity first (the agent passes the same
        lists every turn), then by their JSON."""
        fast = (id(tools), id(response_format), _choice_key(tool_choice), parallel)
        hit = self._by_id.get(fast)
        if hit is not None and hit[0] is tools and hit[1] is response_format:
            return hit[2]
        key = (json.dumps(tools, sort_keys=True) if tools else None, _choice_key(tool_choice),
               json.dumps(response_format, sort_keys=True), parallel)
        c = self._constraints.get(key)
        if c is None:
            mode, name = _tool_choice(tool_choice)
            fmt = (ResponseFormat.model_validate(response_format)
                   if response_format is not None else None)
            c = constraint_for(tools or [], mode, name, fmt, parallel=parallel)
            precompile(self.engine, *c)
            self._constraints[key] = c
        if len(self._by_id) >= 64:
            self._by_id.clear()
        self._by_id[fast] = (tools, response_format, c)  # holding them keeps the ids valid
        return c

    async def turn(self, messages: list[dict], *, session: str, tools: list[dict] | None = None,
                   tool_choice: Any = None, response_format: dict | None = None,
                   **settings: Any) -> AsyncIterator[Delta]:
        """One model turn: Delta(text | call | args)*, then Delta(usage)."""
        unknown = set(settings) - SETTINGS
        assert not unknown, f"settings not supported on an engine: {sorted(unknown)}"
        eng, tok = self.engine, self.engine.tokenizer
        parallel = settings.get("parallel_tool_calls") is not False
        constraint, _ = self._constraint(tools, tool_choice, response_format, parallel)
        mode = _tool_choice(tool_choice)[0]
        new = session not in self._converted
        msgs = self._messages(session, messages)
        if new:
            self._seed(session, msgs, tools)
        prompt = build_prompt(tok, self.prompts, msgs, tools or None, None, session)
        requested = settings.get("max_completion_tokens") or settings.get("max_tokens")
        max_new = max_new_tokens(requested, "max_tokens", len(prompt.ids), eng.max_context)
        parse_tools = bool(tools) and mode != "none"
        stops = stops_of(settings.get("stop")) + (
            ("</tool_call>",) if parse_tools and not parallel else ())
        from agentfast.engine import SamplingParams

        temperature = settings.get("temperature")
        params = SamplingParams(
            max_tokens=max_new, temperature=DEFAULT_TEMPERATURE if temperature is None
            else temperature, top_p=settings.get("top_p") or 1.0, seed=settings.get("seed"),
            stop=stops, **({"constraint": constraint} if constraint is not None else {}))
        parser = ToolParser(self.formats, parallel) if parse_tools else None
        job = self.scheduler.submit(Work(ids=prompt.ids, params=params, session=prompt.session),
                                    None)

        async def steps() -> AsyncIterator[Step | Done]:
            async for s in job.events():
                if isinstance(s, Done):
                    self.prompts.after(tok, prompt, s.result.token_ids, s.result.stop)
                yield s

        try:
            async for ev in turn(steps(), parser):
                if ev.kind == "content":
                    if ev.text:
                        yield Delta("text", ev.text)
                elif ev.kind == "call":
                    yield Delta("call", index=ev.index, id=ev.id, name=ev.name)
                elif ev.kind == "args":
                    yield Delta("args", ev.text, index=ev.index)
                else:
                    r = ev.result
                    completion = len(r.token_ids) + (1 if isinstance(r.stop, int) else 0)
                    yield Delta("usage", prompt_tokens=r.prompt_tokens,
                                completion_tokens=completion, cached_tokens=r.reused_tokens,
                                result=r)
        finally:
            job.cancel()  # a no-op once done; stops the engine if the consumer left early


def _choice_key(choice: Any) -> str:
    return choice if choice is None or isinstance(choice, str) else json.dumps(choice,
                                                                                sort_keys=True)


def _tool_choice(choice: Any) -> tuple[str, str | None]:
    if choice is None or isinstance(choice, str):
        return choice or "auto", None
    return "required", (choice.get("function") or choice).get("name")
