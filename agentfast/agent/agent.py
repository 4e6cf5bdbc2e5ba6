"""The agent loop over the in-process OpenAI client: one chat.completions stream per turn (strict
tools, tool_choice auto), the turn's tool calls run concurrently under a limit, their results are
appended, next turn. One session per run (the `user` field and the x-session-id header), and the
conversation only grows, so the server reuses the session's KV cache and prefills only new tokens.
Knows nothing of tokens or the engine beyond the client it talks to."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel

from .events import RunFinished, TextDelta, ToolCallStarted, ToolResult, TurnFinished
from .tools import Tool, as_tool, strict_schema
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


def _client(model_or_engine: Any) -> Any:
    if hasattr(getattr(model_or_engine, "chat", None), "completions"):
        return model_or_engine  # an (Async)OpenAI-like client
    from agentfast.server.inprocess import AsyncOpenAI

    if isinstance(model_or_engine, str):
        from agentfast.engine import Engine

        model_or_engine = Engine.load(model_or_engine)
    return AsyncOpenAI(engine=model_or_engine, model_name="default")


class Agent:
    """An agent: instructions, tools (functions or `@tool`s) and, optionally, a pydantic
    `output_type` the final answer is parsed into (requested with a strict json_schema).

    `model_or_engine`: None (the embedded model), a checkpoint path, an Engine, or an
    AsyncOpenAI-compatible client. `settings` go to every chat.completions request
    (max_tokens, temperature...)."""

    def __init__(self, model_or_engine: Any = None, instructions: str = "",
                 tools: Sequence[Tool | Callable] = (), output_type: type[BaseModel] | None = None,
                 max_turns: int = 10, tool_timeout: float | None = 30.0,
                 max_concurrent_tools: int = 4, model: str = "default",
                 settings: dict | None = None):
        assert max_turns >= 1, f"max_turns must be >= 1, got {max_turns}"
        self.client = _client(model_or_engine)
        self.instructions, self.output_type = instructions, output_type
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.max_turns, self.tool_timeout = max_turns, tool_timeout
        self.max_concurrent_tools, self.model = max_concurrent_tools, model
        self.settings = dict(settings or {})

    async def run(self, task: str, **kw: Any) -> RunResult:
        async for ev in self.run_stream(task, **kw):
            if isinstance(ev, RunFinished):
                return ev.result
        raise AssertionError("run_stream ended without RunFinished")

    def _format(self) -> dict:
        assert self.output_type is not None
        schema = strict_schema(self.output_type.model_json_schema())
        return {"type": "json_schema", "json_schema": {
            "name": self.output_type.__name__, "schema": schema, "strict": True}}

    async def run_stream(self, task: str, *, first_tool_choice: Any = None,
                         session: str | None = None) -> AsyncIterator[Any]:
        """Yields TextDelta / ToolCallStarted / ToolResult / TurnFinished per turn, then
        RunFinished. `first_tool_choice` overrides tool_choice on the first turn ("required")."""
        session = session or f"agent-{uuid.uuid4().hex}"
        messages: list[dict] = ([{"role": "system", "content": self.instructions}]
                                if self.instructions else [])
        messages.append({"role": "user", "content": task})
        usage, trace = Usage(), Trace()
        final_format = False  # set when the text answer must be redone as structured output
        for turn in range(1, self.max_turns + 2):
            if turn > self.max_turns and not final_format:
                raise MaxTurnsExceeded(self.max_turns, RunResult(None, messages, usage,
                                                                 turn - 1, trace))
            kw: dict[str, Any] = {**self.settings, "model": self.model, "messages": messages,
                                  "stream": True, "stream_options": {"include_usage": True},
                                  "user": session, "extra_headers": {"x-session-id": session}}
            if self.tools and not final_format:
                kw["tools"] = [t.spec() for t in self.tools.values()]
                kw["tool_choice"] = (first_tool_choice or "auto") if turn == 1 else "auto"
            if self.output_type is not None and (final_format or not self.tools):
                kw["response_format"] = self._format()
            tt = TurnTrace(turn)
            text, calls = [], {}
            t0 = time.perf_counter()
            stream = await self.client.chat.completions.create(**kw)
            async for chunk in stream:
                if chunk.usage is not None:
                    u = chunk.usage
                    details = getattr(u, "prompt_tokens_details", None)
                    tt.prompt_tokens, tt.completion_tokens = u.prompt_tokens, u.completion_tokens
                    tt.cached_tokens = (getattr(details, "cached_tokens", 0) or 0) if details else 0
                for ch in chunk.choices:
                    d = ch.delta
                    if (d.content or d.tool_calls) and not tt.ttft_s:
                        tt.ttft_s = time.perf_counter() - t0
                    if d.content:
                        text.append(d.content)
                        yield TextDelta(turn, d.content)
                    for tc in d.tool_calls or ():
                        c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        c["id"] = tc.id or c["id"]
                        if tc.function is not None:
                            c["name"] += tc.function.name or ""
                            c["arguments"] += tc.function.arguments or ""
            tt.model_s = time.perf_counter() - t0
            usage.prompt_tokens += tt.prompt_tokens
            usage.completion_tokens += tt.completion_tokens
            usage.cached_tokens += tt.cached_tokens
            content = "".join(text)
            if calls:
                ordered = [calls[i] for i in sorted(calls)]
                for c in ordered:
                    c["id"] = c["id"] or f"call_{uuid.uuid4().hex[:12]}"
                messages.append({"role": "assistant", "content": content or None, "tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in ordered]})
                for c in ordered:
                    yield ToolCallStarted(turn, c["id"], c["name"], c["arguments"])
                t1 = time.perf_counter()
                results = await self._run_tools(ordered)
                tt.tool_s = time.perf_counter() - t1
                for c, (out, ok, secs) in zip(ordered, results, strict=True):
                    messages.append({"role": "tool", "tool_call_id": c["id"], "content": out})
                    yield ToolResult(turn, c["id"], c["name"], out, ok, secs)
            tt.total_s = time.perf_counter() - t0
            trace.turns.append(tt)
            yield TurnFinished(turn, tt, len(calls))
            if calls:
                continue
            if self.output_type is not None and self.tools and not final_format:
                final_format = True  # ask again, from the same prefix, for the structured answer
                continue
            messages.append({"role": "assistant", "content": content})
            output = (self.output_type.model_validate_json(content)
                      if self.output_type is not None else content)
            result = RunResult(output, messages, usage, turn, trace)
            yield RunFinished(result, output)
            return

    async def _run_tools(self, calls: list[dict]) -> list[tuple[str, bool, float]]:
        """All of a turn's calls at once, at most max_concurrent_tools running; results in call
        order."""
        limit = anyio.CapacityLimiter(self.max_concurrent_tools)
        results: list[tuple[str, bool, float]] = [("", False, 0.0)] * len(calls)

        async def one(i: int, c: dict) -> None:
            async with limit:
                t0 = time.perf_counter()
                t = self.tools.get(c["name"])
                if t is None:
                    out, ok = (f"Error: no tool named {c['name']!r}; tools: "
                               f"{', '.join(self.tools)}"), False
                else:
                    out, ok = await t.call(c["arguments"], self.tool_timeout)
                results[i] = (out, ok, time.perf_counter() - t0)

        async with anyio.create_task_group() as tg:
            for i, c in enumerate(calls):
                tg.start_soon(one, i, c)
        return results
