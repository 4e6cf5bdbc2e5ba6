"""The agent's fast path to an Engine in the same process: the server's own prompt rendering
(chat template, injected tool prompt, append-only token cache), tool-call grammar, tool-call
parser and scheduler (one generation at a time per engine, shared with any server on it), but
no HTTP, JSON, server-sent events or `openai` client objects in between.

What it saves per turn is host time: the openai client's request transform and per-chunk
pydantic objects, the ASGI round trip, the tool grammar, which the server builds again from
the tool schemas on every request (tens of ms) and which is built here once per (tools,
tool_choice), and the whole-conversation rendering: only the messages appended since the last
turn are converted, rendered and tokenized (`prompt.ChatPrompts`), and the output is not
decoded again for the prompt cache where the streamed text is exact. The job's steps are read
straight off its queue into the tool parser; on a backend whose decode runs ahead of the host
(the monokernel) and an idle engine, the generation runs on the event loop's own thread instead
(`Scheduler.hold`/`run_here`: no hand-off to the engine's worker before the first token or back
after the last; the loop serves its other tasks between tokens). The output is the same as through
`agentfast.AsyncOpenAI`: same prompt tokens, same constraint, same parser. Errors in the
request (context overflow, a bad schema) raise `APIError` from `agentfast.server.protocol`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from agentfast.engine import GenerationResult, SamplingParams
from agentfast.server.chat import template_formats
from agentfast.server.params import (
    DEFAULT_TEMPERATURE,
    constraint_for,
    max_new_tokens,
    precompile,
    stops_of,
)
from agentfast.server.protocol import ResponseFormat
from agentfast.server.scheduler import Step, Work, scheduler_for
from agentfast.server.tool_parser import ToolParser

from .agent import Delta
from .prompt import ChatPrompts

SETTINGS = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
            "parallel_tool_calls"}


class EngineChat:
    """Chat turns straight on `engine` (see the module doc). One per agent; safe to have many
    on one engine (they queue on its one scheduler)."""

    def __init__(self, engine: Any, inline: bool | None = None):
        """`inline`: run generations on the event loop's thread when the engine is idle (None:
        where the backend's decode runs ahead of the host and no drafter is set)."""
        self.engine = engine
        self.inline = inline
        self.scheduler = scheduler_for(engine)
        self.prompts = ChatPrompts(engine.tokenizer)  # rendered and tokenized incrementally
        _, self.formats = template_formats(engine.tokenizer.chat_template)
        self._constraints: dict[tuple, Any] = {}
        self._by_id: dict[tuple, tuple[Any, Any, Any]] = {}
        self._sampling: dict[tuple, SamplingParams] = {}

    def release(self, session: str) -> None:
        """Forget a finished session: its prompt state here and its KV cache in the engine
        (which keeps the cache's memory for the next new session)."""
        self.prompts.release(session)
        self.engine.sessions.drop(f"h:{session}")

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

    def _params(self, *key: Any) -> SamplingParams:
        """SamplingParams(max_tokens, temperature, top_p, seed, stop, constraint), built once
        per distinct value (an agent's turns mostly repeat one)."""
        p = self._sampling.get(key)
        if p is None:
            max_tokens, temperature, top_p, seed, stop, constraint = key
            if len(self._sampling) >= 64:
                self._sampling.clear()
            p = self._sampling[key] = SamplingParams(
                max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                stop=stop, **({"constraint": constraint} if constraint is not None else {}))
        return p

    async def turn(self, messages: list[dict], *, session: str, tools: list[dict] | None = None,
                   tool_choice: Any = None, response_format: dict | None = None,
                   **settings: Any) -> AsyncIterator[Delta]:
        """One model turn: Delta(text | call | args)*, then Delta(usage)."""
        unknown = set(settings) - SETTINGS
        assert not unknown, f"settings not supported on an engine: {sorted(unknown)}"
        eng = self.engine
        parallel = settings.get("parallel_tool_calls") is not False
        constraint, _ = self._constraint(tools, tool_choice, response_format, parallel)
        mode = _tool_choice(tool_choice)[0]
        prompt = self.prompts.build(session, messages, tools or None)
        requested = settings.get("max_completion_tokens") or settings.get("max_tokens")
        max_new = max_new_tokens(requested, "max_tokens", len(prompt.ids), eng.max_context)
        parse_tools = bool(tools) and mode != "none"
        stops = stops_of(settings.get("stop")) + (
            ("</tool_call>",) if parse_tools and not parallel else ())
        temperature = settings.get("temperature")
        params = self._params(max_new, DEFAULT_TEMPERATURE if temperature is None
                              else temperature, settings.get("top_p") or 1.0,
                              settings.get("seed"), stops, constraint)

        def remember(r: GenerationResult) -> None:  # on the engine's thread, before Done
            if r.finish_reason != "cancelled":  # (the consumer left: nothing comes back)
                self.prompts.after(prompt, r.token_ids, r.stop, r.text)

        parser = ToolParser(self.formats, parallel) if parse_tools else None
        work = Work(ids=prompt.ids, params=params, session=prompt.session, on_done=remember)
        held = self._inline() and self.scheduler.hold()
        here = self.scheduler.run_here(work) if held else None  # Steps, Done on this thread
        job = None if held else self.scheduler.submit(work, None)
        q = job.q if job is not None else None  # the job's items, posted by the engine's thread
        done = False
        try:
            while True:  # what server.streaming.turn does, without logprobs or its events
                if here is not None:
                    item = next(here)  # blocks until the engine's next token
                else:
                    item = q.get_nowait() if q.qsize() else await q.get()
                if isinstance(item, Step):
                    if parser is not None:
                        for ev in parser.push(item.text):
                            if ev.text or ev.kind != "content":
                                yield _delta(ev)
                    elif item.text:
                        yield Delta("text", item.text)
                    if here is not None:
                        await asyncio.sleep(0)  # the loop's other tasks, between tokens
                    continue
                if isinstance(item, BaseException):
                    raise item
                for ev in parser.finish() if parser is not None else ():
                    if ev.text or ev.kind != "content":
                        yield _delta(ev)
                r, done = item.result, True
                completion = len(r.token_ids) + (1 if isinstance(r.stop, int) else 0)
                yield Delta("usage", prompt_tokens=r.prompt_tokens, completion_tokens=completion,
                            cached_tokens=r.reused_tokens, accepted=r.accepted_draft_tokens,
                            draft_length=r.accepted_draft_length, result=r)
                return
        finally:
            if here is not None:
                here.close()  # (early: cancels the generation)
                self.scheduler.release()
            elif not done:
                job.cancel()  # the consumer left early (or an error): stop the engine

    def _inline(self) -> bool:
        if self.inline is not None:
            return self.inline
        return bool(getattr(self.engine.backend, "runs_ahead", False)) and (
            getattr(self.engine, "drafter", None) is None)


def _delta(ev: Any) -> Delta:
    """A tool parser Event as a Delta."""
    if ev.kind == "content":
        return Delta("text", ev.text)
    if ev.kind == "call":
        return Delta("call", index=ev.index, id=ev.id, name=ev.name)
    return Delta("args", ev.text, index=ev.index)


def _choice_key(choice: Any) -> str:
    return choice if choice is None or isinstance(choice, str) else json.dumps(choice,
                                                                                sort_keys=True)


def _tool_choice(choice: Any) -> tuple[str, str | None]:
    if choice is None or isinstance(choice, str):
        return choice or "auto", None
    return "required", (choice.get("function") or choice).get("name")
