"""The agent loop: one model turn at a time (strict tools, tool_choice auto), the turn's tool calls
run concurrently under a limit and each result is streamed as it finishes, the results are
appended, next turn. One session per run and the conversation only grows, so the session's KV
cache is reused and only new tokens are prefilled.

Two ways to the model, one loop: an Engine (or a checkpoint path, or None for the embedded
model) is driven directly through `direct.EngineChat` (the server's prompt rendering, grammar,
parser and scheduler, without HTTP or the openai client: the least host time per turn); any
AsyncOpenAI-compatible client (`agentfast.AsyncOpenAI`, `openai.AsyncOpenAI(base_url=...)` on
`agentfast serve` or another server) gets one chat.completions stream per turn, with the
session in the `user` field and the x-session-id header."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel

from .events import RunFinished, TextDelta, ToolCallStarted, ToolResult, TurnFinished
from .tools import Tool, ToolRun, as_tool, strict_schema
from .trace import Trace, TurnTrace


class MaxTurnsExceeded(RuntimeError):
    def __init__(self, max_turns: int, result: RunResult):
        super().__init__(f"the agent used its {max_turns} turns (max_turns={max_turns}) and the "
                         "model was still calling tools; raise max_turns or simplify the task")
        self.result = result


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class RunResult:
    output: Any
    messages: list[dict]
    usage: Usage
    turns: int
    trace: Trace = field(default_factory=Trace)


def _backend(model_or_engine: Any, direct: bool) -> tuple[Any, Any]:
    """(openai-like client or None, EngineChat or None)."""
    if hasattr(getattr(model_or_engine, "chat", None), "completions"):
        return model_or_engine, None  # an (Async)OpenAI-like client
    if model_or_engine is None or isinstance(model_or_engine, str):
        from agentfast.engine import Engine

        model_or_engine = Engine.load(model_or_engine)
    if direct:
        from .direct import EngineChat

        return None, EngineChat(model_or_engine)
    from agentfast.server.inprocess import AsyncOpenAI

    return AsyncOpenAI(engine=model_or_engine, model_name="default"), None


@dataclass
class Delta:
    """A piece of a model turn (either backend): text, a tool call's id/name/argument text by
    index, or the end's token counts."""

    kind: str  # "text" | "call" | "args" | "usage"
    text: str = ""
    index: int = 0
    id: str = ""
    name: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    accepted: int = 0  # accepted draft tokens (speculative decoding), where reported
    draft_length: float = 0.0  # mean accepted drafts per verification step (direct path)
    result: Any = None  # the engine's GenerationResult (direct path)


def _usage_delta(u: Any) -> Delta:
    details = getattr(u, "prompt_tokens_details", None)
    out = getattr(u, "completion_tokens_details", None)
    return Delta("usage", prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                 cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
                 accepted=(getattr(out, "accepted_prediction_tokens", 0) or 0) if out else 0)


class Agent:
    """An agent: instructions, tools (functions or `@tool`s) and, optionally, a pydantic
    `output_type` the final answer is parsed into (requested with a strict json_schema).

    `model_or_engine`: None (the embedded model), a checkpoint path, an Engine, or an
    AsyncOpenAI-compatible client. `settings` go to every request (max_tokens, temperature,
    top_p, seed, stop, parallel_tool_calls; with a client, any chat.completions field).
    An engine is driven directly unless `direct=False`, which puts the in-process OpenAI
    server (`agentfast.AsyncOpenAI`) in between. Several agents may share one engine: it
    runs one generation at a time, and each run keeps its own session."""

    def __init__(self, model_or_engine: Any = None, instructions: str = "",
                 tools: Sequence[Tool | Callable | type[BaseModel]] = (),
                 output_type: type[BaseModel] | None = None,
                 max_turns: int = 10, tool_timeout: float | None = 30.0,
                 max_concurrent_tools: int = 4, model: str = "default",
                 settings: dict | None = None, direct: bool = True):
        assert max_turns >= 1, f"max_turns must be >= 1, got {max_turns}"
        assert max_concurrent_tools >= 1, "max_concurrent_tools must be >= 1"
        self.client, self.engine_chat = _backend(model_or_engine, direct)
        self.instructions, self.output_type = instructions, output_type
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.tool_specs = [t.spec() for t in self.tools.values()]
        self._response_format: dict | None = None
        self.max_turns, self.tool_timeout = max_turns, tool_timeout
        self.max_concurrent_tools, self.model = max_concurrent_tools, model
        self.settings = dict(settings or {})

    async def run(self, task: str, **kw: Any) -> RunResult:
        async with aclosing(self.run_stream(task, **kw)) as events:
            async for ev in events:
                if isinstance(ev, RunFinished):
                    return ev.result
        raise AssertionError("run_stream ended without RunFinished")

    def _format(self) -> dict:
        """The strict json_schema response_format of output_type (built once)."""
        assert self.output_type is not None
        if self._response_format is None:
            schema = strict_schema(self.output_type.model_json_schema())
            self._response_format = {"type": "json_schema", "json_schema": {
                "name": self.output_type.__name__, "schema": schema, "strict": True}}
        return self._response_format

    async def run_stream(self, task: str, *, first_tool_choice: Any = None,
                         session: str | None = None) -> AsyncIterator[Any]:
        """Yields TextDelta / ToolCallStarted / ToolResult / TurnFinished per turn, then
        RunFinished. `first_tool_choice` overrides tool_choice on the first turn ("required")."""
        own = session is None  # a session made here is released at the end of the run
        session = session or f"agent-{uuid.uuid4().hex}"
        messages: list[dict] = ([{"role": "system", "content": self.instructions}]
                                if self.instructions else [])
        messages.append({"role": "user", "content": task})
        usage, trace = Usage(), Trace()
        final_format = False  # set when the text answer must be redone as structured output
        try:
            for turn in range(1, self.max_turns + 2):
                if turn > self.max_turns and not final_format:
                    raise MaxTurnsExceeded(self.max_turns, RunResult(None, messages, usage,
                                                                     turn - 1, trace))
                kw: dict[str, Any] = {}
                if self.tools and not final_format:
                    kw["tools"] = self.tool_specs
                    kw["tool_choice"] = (first_tool_choice or "auto") if turn == 1 else "auto"
                if self.output_type is not None and (final_format or not self.tools):
                    kw["response_format"] = self._format()
                tt = TurnTrace(turn)
                text: list[str] = []
                calls: dict[int, dict] = {}
                t0 = time.perf_counter()
                async with aclosing(self._model_turn(messages, session, kw)) as deltas:
                    async for d in deltas:
                        if d.kind == "usage":
                            tt.prompt_tokens, tt.completion_tokens = (d.prompt_tokens,
                                                                      d.completion_tokens)
                            tt.cached_tokens = d.cached_tokens
                            tt.accepted_draft_tokens = d.accepted
                            tt.accepted_draft_length = d.draft_length
                            continue
                        if not tt.ttft_s:
                            tt.ttft_s = time.perf_counter() - t0
                        if d.kind == "text":
                            text.append(d.text)
                            yield TextDelta(turn, d.text)
                        else:
                            c = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                            c["id"] = d.id or c["id"]
                            c["name"] += d.name
                            c["arguments"] += d.text
                tt.model_s = time.perf_counter() - t0
                usage.prompt_tokens += tt.prompt_tokens
                usage.completion_tokens += tt.completion_tokens
                usage.cached_tokens += tt.cached_tokens
                content = "".join(text)
                if calls:
                    ordered = [calls[i] for i in sorted(calls)]
                    for c in ordered:
                        c["id"] = c["id"] or f"call_{uuid.uuid4().hex[:12]}"
                    messages.append({"role": "assistant", "content": content or None,
                                     "tool_calls": [
                        {"id": c["id"], "type": "function",
                         "function": {"name": c["name"], "arguments": c["arguments"]}}
                        for c in ordered]})
                    for c in ordered:
                        yield ToolCallStarted(turn, c["id"], c["name"], c["arguments"])
                    outs: list[str] = [""] * len(ordered)
                    if len(ordered) == 1:  # (the common case, without the generator below)
                        c = ordered[0]
                        run = await self._call(c)
                        outs[0], tt.tool_s = run.text, run.seconds
                        yield ToolResult(turn, c["id"], c["name"], run.text, run.ok, run.seconds)
                    else:
                        spans: list[tuple[float, float]] = []
                        # each result is yielded as its tool finishes; the messages keep call
                        # order
                        async with aclosing(self._tool_results(ordered)) as results:
                            async for i, run in results:
                                outs[i] = run.text
                                spans.append((run.start, run.end))
                                yield ToolResult(turn, ordered[i]["id"], ordered[i]["name"],
                                                 run.text, run.ok, run.seconds)
                        tt.tool_s = _covered(spans)
                    for c, out in zip(ordered, outs, strict=True):
                        messages.append({"role": "tool", "tool_call_id": c["id"], "content": out})
                tt.total_s = time.perf_counter() - t0
                trace.turns.append(tt)
                yield TurnFinished(turn, tt, len(calls))
                if calls:
                    continue
                if self.output_type is not None and self.tools and not final_format:
                    final_format = True  # ask again, same prefix, for the structured answer
                    continue
                messages.append({"role": "assistant", "content": content})
                output = (self.output_type.model_validate_json(content)
                          if self.output_type is not None else content)
                result = RunResult(output, messages, usage, turn, trace)
                yield RunFinished(result, output)
                return
        finally:
            if own and self.engine_chat is not None:
                self.engine_chat.release(session)  # its KV cache goes to the next run

    def _model_turn(self, messages: list[dict], session: str, kw: dict) -> AsyncIterator[Any]:
        """One model turn as Deltas (text, call, args, then usage), from either backend;
        closing it early cancels the generation."""
        if self.engine_chat is not None:
            return self.engine_chat.turn(messages, session=session, **kw, **self.settings)
        return self._client_turn(messages, session, kw)

    async def _client_turn(self, messages: list[dict], session: str, kw: dict
                           ) -> AsyncIterator[Any]:
        stream = await self.client.chat.completions.create(
            **self.settings, **kw, model=self.model, messages=messages, stream=True,
            stream_options={"include_usage": True}, user=session,
            extra_headers={"x-session-id": session})
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield _usage_delta(chunk.usage)
                for ch in chunk.choices:
                    d = ch.delta
                    if d.content:
                        yield Delta("text", d.content)
                    for tc in d.tool_calls or ():
                        f = tc.function
                        yield Delta("args", (f.arguments or "") if f else "", index=tc.index,
                                    id=tc.id or "", name=(f.name or "") if f else "")
        finally:  # a consumer that stops early closes the request (the server cancels it)
            close = getattr(stream, "close", None) or getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def _call(self, c: dict) -> ToolRun:
        t = self.tools.get(c["name"])
        if t is None:
            now = time.perf_counter()
            return ToolRun(f"Error: no tool named {c['name']!r}; tools: "
                           f"{', '.join(self.tools)}", False, now, now)
        return await t.run(c["arguments"], self.tool_timeout)

    async def _tool_results(self, calls: list[dict]) -> AsyncIterator[tuple[int, ToolRun]]:
        """All of a turn's calls at once, at most max_concurrent_tools running; yields
        (index, ToolRun) as each one finishes. Inline tools (quick, sync) run first, one after
        the other on the loop; a single other call is awaited without a task group. (Tool
        time is the union of the functions' own spans: `_covered`.)"""
        rest = []
        for i, c in enumerate(calls):
            t = self.tools.get(c["name"])
            if t is not None and t.inline and not t.is_async:
                yield i, await self._call(c)
            else:
                rest.append((i, c))
        if len(rest) == 1:
            i, c = rest[0]
            yield i, await self._call(c)
        if len(rest) <= 1:
            return
        limit = (anyio.CapacityLimiter(self.max_concurrent_tools)
                 if len(rest) > self.max_concurrent_tools else None)
        send, recv = anyio.create_memory_object_stream[tuple[int, ToolRun]](len(rest))

        async def one(i: int, c: dict) -> None:
            if limit is None:
                res = await self._call(c)
            else:
                async with limit:
                    res = await self._call(c)
            send.send_nowait((i, res))  # the buffer holds every call's result

        async with anyio.create_task_group() as tg, recv:
            for i, c in rest:
                tg.start_soon(one, i, c)
            for _ in rest:
                yield await recv.receive()


def _covered(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans: the wall time during which at least
    one of a turn's tools was running."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
