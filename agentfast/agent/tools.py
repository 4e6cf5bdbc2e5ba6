"""Tools from plain Python functions or pydantic models: the signature's type hints and the
docstring (or the model's fields) give a strict JSON schema (every property required,
additionalProperties false), pydantic validates the model's arguments before the call, and
every failure (bad JSON, invalid arguments, an exception, a timeout) becomes the result text
the model reads, never an exception up the stack.

Where a tool runs: an async function on the event loop; a sync one in a worker thread (so it
cannot block the loop), unless it is marked `inline` (a quick one, such as a small file read:
called on the loop, which saves the two thread hops, ~0.1-0.3 ms each on a loaded CPU, but
`timeout` cannot cut it). `Tool.run` also says when the function itself started and ended:
the agent's trace counts that as tool time, and the dispatching around it (validation, the
thread hops) as host time.
Knows nothing of the client or the conversation."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, get_type_hints

import anyio
import pydantic
from pydantic import BaseModel

# asyncio.timeout (Python 3.11+): the timeout of a call on an asyncio loop; an anyio CancelScope
# elsewhere
_asyncio_timeout = getattr(asyncio, "timeout", None)
_PARAM = re.compile(r"^[ \t]*(?::param[ \t]+)?(\w+)[ \t]*(?:\([^)]*\))?[ \t]*:[ \t]*(\S.*)$", re.M)


def _doc(fn: Callable) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google/Sphinx-style docstring."""
    doc = inspect.getdoc(fn) or ""
    head = re.split(r"\n\s*(?:Args|Arguments|Parameters):?\s*\n|\n\s*:param ", doc)[0]
    params = {}
    for m in _PARAM.finditer(doc):
        if m.group(1) in inspect.signature(fn).parameters:
            params[m.group(1)] = m.group(2).strip()
    return " ".join(head.split()), params


def strict_schema(s: Any) -> Any:
    """OpenAI strict form, in place: objects close (additionalProperties false) and require all
    their properties; titles and defaults go."""
    if isinstance(s, dict):
        s.pop("title", None)
        s.pop("default", None)
        if s.get("type") == "object" or "properties" in s:
            s["additionalProperties"] = False
            s["required"] = list(s.get("properties", {}))
        for k, v in list(s.items()):
            if k == "properties":
                for p in v.values():
                    strict_schema(p)
            elif isinstance(v, dict | list):
                strict_schema(v)
    elif isinstance(s, list):
        for x in s:
            strict_schema(x)
    return s


class ToolRun(NamedTuple):
    """A call's result text for the model, whether it succeeded, and when the tool's function
    ran (time.perf_counter(); start == end where it never ran: invalid arguments)."""

    text: str
    ok: bool
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Tool:
    name: str
    description: str
    fn: Callable
    args_model: type[BaseModel]
    parameters: dict
    takes_model: bool = False  # fn(validated_model) instead of fn(**fields): pydantic-model tools
    inline: bool = False  # a quick sync fn, called on the event loop (see the module doc)
    is_async: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)

    def spec(self, strict: bool = True) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": self.parameters, "strict": strict}}

    async def call(self, arguments: str, timeout: float | None) -> tuple[str, bool]:
        """-> (result text for the model, ok)."""
        r = await self.run(arguments, timeout)
        return r.text, r.ok

    async def run(self, arguments: str, timeout: float | None) -> ToolRun:
        """Validate `arguments` (JSON), call the function, and say when it ran."""
        try:
            args = self.args_model.model_validate_json(arguments or "{}")
        except pydantic.ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}"
                             for x in e.errors())
            now = time.perf_counter()
            return ToolRun(f"Error: invalid arguments for {self.name}: {errs}", False, now, now)
        pos: tuple = (args,) if self.takes_model else ()
        kw = {} if self.takes_model else args.__dict__  # the validated fields
        span = [0.0, 0.0]  # [start, end] of the function itself

        def timed() -> Any:  # sync fn, here or in the worker thread
            span[0] = time.perf_counter()
            try:
                return self.fn(*pos, **kw)
            finally:
                span[1] = time.perf_counter()

        async def call() -> Any:
            if not self.is_async:
                return await anyio.to_thread.run_sync(timed, abandon_on_cancel=True)
            span[0] = time.perf_counter()
            try:
                return await self.fn(*pos, **kw)
            finally:
                span[1] = time.perf_counter()

        try:
            if self.inline and not self.is_async:
                out = timed()
            elif timeout is None:
                out = await call()
            elif _asyncio_timeout is not None and asyncio._get_running_loop() is not None:
                async with _asyncio_timeout(timeout):  # (~half the cost of a CancelScope)
                    out = await call()
            else:
                with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                    out = await call()
                if scope.cancelled_caught:
                    raise TimeoutError
        except TimeoutError:
            text, ok = f"Error: {self.name} timed out after {timeout} s", False
        except Exception as e:  # the model reads it and may try again
            text, ok = f"Error: {self.name} raised {type(e).__name__}: {e}", False
        else:
            text, ok = _text(out), True
        now = time.perf_counter()  # the end of a call cut by the timeout or never started
        return ToolRun(text, ok, span[0] or now, span[1] or now)


def _text(out: Any) -> str:
    if isinstance(out, str):
        return out
    if isinstance(out, BaseModel):
        return out.model_dump_json()
    return json.dumps(out, default=str)


def model_tool(cls: type[BaseModel], name: str | None = None,
               description: str | None = None) -> Tool:
    """A pydantic model with a `run(self)` (or `__call__`) method, sync or async, as a tool: its
    fields are the arguments (the model's JSON schema, made strict), the class docstring the
    description; the model validates the arguments and `run` is called on the instance."""
    method = getattr(cls, "run", None)
    if method is None and any("__call__" in vars(c) for c in cls.__mro__
                              if c not in (BaseModel, object)):
        method = cls.__call__
    assert callable(method), f"tool {cls.__name__}: a pydantic model tool needs a run() method"
    schema = strict_schema(cls.model_json_schema())
    doc = " ".join((inspect.getdoc(cls) or "").split()) if cls.__doc__ else ""
    return Tool(name or cls.__name__, description or doc or cls.__name__, method, cls, schema,
                takes_model=True)


def tool(fn: Callable | type[BaseModel] | None = None, *, name: str | None = None,
         description: str | None = None, inline: bool = False) -> Any:
    """`@tool` or `@tool(name=..., description=..., inline=...)`: a function (or a pydantic
    model with a `run` method, see `model_tool`) -> Tool. `inline=True`: a quick sync function,
    called on the event loop instead of a worker thread (see the module doc)."""
    def wrap(f: Callable) -> Tool:
        if isinstance(f, type) and issubclass(f, BaseModel):
            return dataclasses.replace(model_tool(f, name, description), inline=inline)
        doc, params = _doc(f)
        hints = get_type_hints(f, include_extras=True)
        fields: dict[str, Any] = {}
        for p in inspect.signature(f).parameters.values():
            assert p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD), \
                f"tool {f.__name__}: *args/**kwargs have no schema"
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (hints.get(p.name, Any),
                              pydantic.Field(default, description=params.get(p.name)))
        model = pydantic.create_model(f"{f.__name__}_args",
                                      __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        schema = strict_schema(model.model_json_schema())
        return Tool(name or f.__name__, description or doc or f.__name__, f, model, schema,
                    inline=inline)

    return wrap if fn is None else wrap(fn)


def as_tool(x: Tool | Callable | type[BaseModel]) -> Tool:
    return x if isinstance(x, Tool) else tool(x)
