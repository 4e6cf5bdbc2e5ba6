"""Engine steps -> content / tool-call events -> OpenAI chat and completion bodies, streamed as
server-sent events or collected into one object.

`turn()` is the shared middle: it runs the tool parser over the streamed text and attaches each
token's logprobs to the content it produced. `EventStream` is the ASGI response that sends each
event the moment it exists and cancels the generation when the client goes away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse

from agentfast.engine import GenerationResult

from .logprobs import TokenLogprob
from .protocol import APIError, Usage
from .scheduler import Done, Job, Step
from .tool_parser import Event, ToolParser


@dataclass
class TurnEvent:
    kind: str  # "content", "call", "args", "done"
    text: str = ""
    index: int = 0
    id: str = ""
    name: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    result: GenerationResult | None = None


def usage_of(r: GenerationResult) -> Usage:
    """Usage; with a drafter, its verified draft tokens as accepted / rejected predictions."""
    completion = len(r.token_ids) + (1 if isinstance(r.stop, int) else 0)
    u = Usage.of(r.prompt_tokens, completion, r.reused_tokens)
    if r.draft_tokens:
        d = u.completion_tokens_details
        d.accepted_prediction_tokens = r.accepted_draft_tokens
        d.rejected_prediction_tokens = r.draft_tokens - r.accepted_draft_tokens
    return u


async def turn(steps: AsyncIterator[Step | Done], parser: ToolParser | None
               ) -> AsyncIterator[TurnEvent]:
    pending: list[TokenLogprob] = []

    def convert(events: list[Event]) -> list[TurnEvent]:
        out = []
        for e in events:
            te = TurnEvent(e.kind, e.text, e.index, e.id, e.name)
            if e.kind == "content" and pending:
                te.logprobs = pending[:]
                pending.clear()
            out.append(te)
        return out

    async for s in steps:
        if isinstance(s, Step):
            pending.extend(s.logprobs or ())
            if parser is None:
                events = [Event("content", s.text)] if s.text else []
            else:
                events = parser.push(s.text)
            for te in convert(events):
                yield te
        else:
            for te in convert(parser.finish() if parser else []):
                yield te
            yield TurnEvent("done", logprobs=pending[:], result=s.result)


def finish_reason(r: GenerationResult, calls: bool) -> str:
    if r.finish_reason == "length":
        return "length"
    return "tool_calls" if calls else "stop"


def sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def error_event(e: Exception) -> bytes:
    err = e if isinstance(e, APIError) else APIError(str(e), status=500, type="server_error")
    return sse(err.body())


# ---- chat completions ----------------------------------------------------------------------

async def chat_stream(events: AsyncIterator[TurnEvent], meta: dict[str, Any],
                      include_usage: bool, lp_format: Callable | None) -> AsyncIterator[bytes]:
    """`chat.completion.chunk` events: role first, then content or tool-call deltas (the first
    delta of a call carries index, id, type, name and empty arguments; then argument
    fragments by index), then finish_reason, then usage (stream_options.include_usage)."""
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish: str | None = None, lps: list | None = None) -> bytes:
        lp = {"content": lp_format(lps), "refusal": None} if lp_format and lps else None
        return sse({**meta, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}], **extra})

    calls = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for ev in events:
            if ev.kind == "content":
                yield chunk({"content": ev.text}, lps=ev.logprobs)
            elif ev.kind == "call":
                calls = True
                yield chunk({"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function",
                                             "function": {"name": ev.name, "arguments": ""}}]})
            elif ev.kind == "args":
                yield chunk({"tool_calls": [{"index": ev.index,
                                             "function": {"arguments": ev.text}}]})
            else:
                assert ev.result is not None
                yield chunk({}, finish_reason(ev.result, calls), lps=ev.logprobs)
                if include_usage:
                    u = usage_of(ev.result).model_dump()
                    yield sse({**meta, "object": "chat.completion.chunk", "choices": [],
                               "usage": u})
        yield b"data: [DONE]\n\n"
    except Exception as e:  # after the headers: an error event
        yield error_event(e)


@dataclass
class Collected:
    content: str = ""
    calls: list[dict] = field(default_factory=list)  # {"id", "name", "arguments"}
    logprobs: list[TokenLogprob] = field(default_factory=list)
    result: GenerationResult | None = None


async def collect(events: AsyncIterator[TurnEvent]) -> Collected:
    c = Collected()
    async for ev in events:
        c.logprobs.extend(ev.logprobs)
        if ev.kind == "content":
            c.content += ev.text
        elif ev.kind == "call":
            c.calls.append({"id": ev.id, "name": ev.name, "arguments": ""})
        elif ev.kind == "args":
            c.calls[ev.index]["arguments"] += ev.text
        else:
            c.result = ev.result
    return c


# ---- completions ---------------------------------------------------------------------------

async def completion_stream(events: AsyncIterator[TurnEvent], meta: dict[str, Any],
                            include_usage: bool, lp_format: Callable | None
                            ) -> AsyncIterator[bytes]:
    extra = {"usage": None} if include_usage else {}
    offset = 0

    def chunk(text: str, finish: str | None, lps: list) -> bytes:
        nonlocal offset
        lp = lp_format(lps, offset) if lp_format else None
        offset += len(text)
        return sse({**meta, "object": "text_completion", "choices": [
            {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}], **extra})

    try:
        async for ev in events:
            if ev.kind == "content":
                yield chunk(ev.text, None, ev.logprobs)
            elif ev.kind == "done":
                assert ev.result is not None
                yield chunk("", finish_reason(ev.result, False), ev.logprobs)
                if include_usage:
                    yield sse({**meta, "object": "text_completion", "choices": [],
                               "usage": usage_of(ev.result).model_dump()})
        yield b"data: [DONE]\n\n"
    except Exception as e:  # after the headers: an error event
        yield error_event(e)


# ---- transport -----------------------------------------------------------------------------

async def prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for x in rest:
        yield x


async def tap(steps: AsyncIterator[Step | Done], on_done: Callable[[GenerationResult], None]
              ) -> AsyncIterator[Step | Done]:
    async for s in steps:
        if isinstance(s, Done):
            on_done(s.result)
        yield s


class EventStream(StreamingResponse):
    """text/event-stream response: each body item is sent as soon as it is produced; a client
    disconnect stops the body and cancels the job (the engine stops at its next token)."""

    def __init__(self, body: AsyncIterator[bytes], job: Job):
        super().__init__(body, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})

        async def pump() -> None:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(watch())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.job.cancel()  # a no-op when the generation already finished
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
