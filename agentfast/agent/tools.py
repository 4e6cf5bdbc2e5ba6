"""Tools from plain Python functions or pydantic models: the signature's type hints and the
docstring (or the model's fields) give a strict JSON schema (every property required,
additionalProperties false), pydantic validates the model's arguments before the call, and
every failure (bad JSON, invalid arguments, an exception, a timeout) becomes the result text
the model reads, never an exception up the stack.
Knows nothing of the client or the conversation."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

import anyio
import pydantic
from pydantic import BaseModel

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


@dataclass
class Tool:
    name: str
    description: str
    fn: Callable
    args_model: type[BaseModel]
    parameters: dict
    takes_model: bool = False  # fn(validated_model) instead of fn(**fields): pydantic-model tools

    def spec(self, strict: bool = True) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": self.parameters, "strict": strict}}

    async def call(self, arguments: str, timeout: float | None) -> tuple[str, bool]:
        """-> (result text for the model, ok)."""
        try:
            args = self.args_model.model_validate_json(arguments or "{}")
        except pydantic.ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}"
                             for x in e.errors())
            return f"Error: invalid arguments for {self.name}: {errs}", False
        pos: tuple = (args,) if self.takes_model else ()
        kw = {} if self.takes_model else {k: getattr(args, k)
                                          for k in self.args_model.model_fields}
        try:
            with anyio.fail_after(timeout):
                if inspect.iscoroutinefunction(self.fn):
                    out = await self.fn(*pos, **kw)
                else:
                    out = await anyio.to_thread.run_sync(lambda: self.fn(*pos, **kw),
                                                         abandon_on_cancel=True)
        except TimeoutError:
            return f"Error: {self.name} timed out after {timeout} s", False
        except Exception as e:  # the model reads it and may try again
            return f"Error: {self.name} raised {type(e).__name__}: {e}", False
        return _text(out), True


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
         description: str | None = None) -> Any:
    """`@tool` or `@tool(name=..., description=...)`: a function (or a pydantic model with a
    `run` method, see `model_tool`) -> Tool."""
    def wrap(f: Callable) -> Tool:
        if isinstance(f, type) and issubclass(f, BaseModel):
            return model_tool(f, name, description)
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
        return Tool(name or f.__name__, description or doc or f.__name__, f, model, schema)

    return wrap if fn is None else wrap(fn)


def as_tool(x: Tool | Callable | type[BaseModel]) -> Tool:
    return x if isinstance(x, Tool) else tool(x)
