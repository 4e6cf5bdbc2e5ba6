"""Request fields -> engine `SamplingParams`, including the structured-output constraint.

Rejects, by field name, what the engine cannot honour (n > 1, penalties, logit_bias, ...).
Structured outputs come from `agentfast.engine.constraints` (JSON Schema, JSON object, tool
calls in Hermes format); a schema it cannot compile is a 400 naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from typing import Any

from agentfast.engine import SamplingParams
from agentfast.engine.errors import RequestError

from .protocol import APIError, ResponseFormat, SamplingFields, Tool

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default: pass temperature=0 for greedy decoding


def reject_unsupported(req: SamplingFields, **extra: Any) -> None:
    checks = {
        "n": (req.n or 1) == 1,
        "presence_penalty": not req.presence_penalty,
        "frequency_penalty": not req.frequency_penalty,
        "logit_bias": not req.logit_bias,
        **extra,
    }
    for name, ok in checks.items():
        if not ok:
            raise APIError(f"{name}: this value is not supported (agentfast serves one "
                           f"sequence per request, without penalties or biases)", param=name,
                           code="unsupported_value")


def max_new_tokens(requested: int | None, field: str, prompt_len: int, max_context: int,
                   prompt_field: str = "messages") -> int:
    room = max_context - prompt_len
    if prompt_len >= max_context:
        raise APIError(f"{prompt_field}: the prompt has {prompt_len} tokens; this model's "
                       f"context holds {max_context}", param=prompt_field,
                       code="context_length_exceeded")
    if requested is None:
        return room
    if requested < 1:
        raise APIError(f"{field}: must be >= 1, got {requested}", param=field)
    if requested > room:
        raise APIError(f"{field}: {prompt_len} prompt tokens + {requested} completion tokens "
                       f"exceed this model's context of {max_context} tokens", param=field,
                       code="context_length_exceeded")
    return requested


def stops_of(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in stops):
        raise APIError("stop: stop strings must not be empty", param="stop")
    return stops


def sampling(req: SamplingFields, max_tokens: int, stops: tuple[str, ...] = (),
             constraint: Any = None) -> SamplingParams:
    kw: dict[str, Any] = {}
    if constraint is not None:
        kw["constraint"] = constraint
    if req.temperature is not None and req.temperature > 2:  # OpenAI's range is [0, 2]
        raise APIError(f"temperature: {req.temperature} is above 2, the maximum",
                       param="temperature")
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed,
            stop=stops_of(req.stop) + stops, **kw)
    except RequestError as e:
        field = str(e).split(" ", 1)[0]
        raise APIError(str(e), param=field) from None


# ---- structured outputs --------------------------------------------------------------------

def _constraints(param: str):
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    try:
        from agentfast.engine import constraints
    except ImportError:
        constraints = None
    if constraints is None or "constraint" not in fields:
        raise APIError(f"{param}: structured outputs (strict tools, tool_choice required, "
                       "response_format) are not supported yet by this engine", param=param,
                       code="unsupported_value")
    return constraints


_GRAMMARS: OrderedDict[str, Any] = OrderedDict()  # canonical request -> Constraint
GRAMMAR_CACHE_SIZE = 256
_grammar_lock = threading.Lock()


def _compile(param: str, fn: str, *args: Any, **kw: Any) -> Any:
    """constraints.<fn>(*args, **kw), memoized by the canonical JSON of the arguments: an
    agent resends the same tools every turn, and building their grammar (schema -> regex)
    costs 10-40 ms; the automaton itself is cached by the constraints module."""
    c = _constraints(param)
    key = json.dumps([fn, args, kw], sort_keys=True, default=str)
    with _grammar_lock:
        hit = _GRAMMARS.get(key)
        if hit is not None:
            _GRAMMARS.move_to_end(key)
            return hit
    try:
        out = getattr(c, fn)(*args, **kw)
    except c.ConstraintError as e:
        raise APIError(f"{param}: {e}", param=param, code="invalid_schema") from None
    with _grammar_lock:
        _GRAMMARS[key] = out
        if len(_GRAMMARS) > GRAMMAR_CACHE_SIZE:
            _GRAMMARS.popitem(last=False)
    return out


def tool_dicts(tools: list[Tool] | None) -> list[dict]:
    return [t.model_dump(exclude_none=True) for t in tools or ()]


def tool_choice_of(choice: Any, name_param: str = "tool_choice.function.name"
                   ) -> tuple[str, str | None]:
    """tool_choice ("none" | "auto" | "required" | a named function) -> (mode, name)."""
    if choice is None or isinstance(choice, str):
        return choice or "auto", None
    name = choice.get("name") if isinstance(choice, dict) else choice.function.get("name")
    if not name:
        raise APIError(f"{name_param}: required", param=name_param)
    return "required", name


def tool_constraint(tools: list[dict], mode: str, name: str | None,
                    strict_default: bool = False, parallel: bool = True) -> Any:
    """The grammar for tool_choice: required/named always force a call; auto is constrained
    when any tool is strict; none, and auto without strict tools, leave the text free. With
    `parallel` (parallel_tool_calls, OpenAI's default) the grammar takes one or more calls in
    the turn, without it exactly one (auto: at most one)."""
    if not tools:
        if mode == "required":
            raise APIError("tool_choice: requires tools", param="tool_choice")
        return None
    names = [t["function"]["name"] for t in tools]
    if name is not None and name not in names:
        raise APIError(f"tool_choice: no tool named {name!r} (tools: {', '.join(names)})",
                       param="tool_choice")
    strict = any(t["function"].get("strict", strict_default) for t in tools)
    if mode == "none" or (mode == "auto" and not strict):
        return None
    return _compile("tools", "tool_call", tools, mode=mode, name=name, parallel=parallel)


def format_constraint(fmt: ResponseFormat | None, strict_default: bool = False) -> Any:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return _compile("response_format", "json_object")
    if fmt.json_schema is None:
        raise APIError("response_format.json_schema: required when type is json_schema",
                       param="response_format.json_schema")
    strict = fmt.json_schema.strict if fmt.json_schema.strict is not None else strict_default
    return _compile("response_format.json_schema.schema", "json_schema",
                    fmt.json_schema.schema_, strict=strict)


def constraint_for(tools: list[dict], mode: str, name: str | None, fmt: ResponseFormat | None,
                   tools_strict_default: bool = False, parallel: bool = True
                   ) -> tuple[Any, str]:
    """(constraint or None, the field it comes from): a tool-call grammar wins over
    response_format, since a forced call has its own shape."""
    c = tool_constraint(tools, mode, name, tools_strict_default, parallel)
    if c is not None:
        return c, "tools"
    return format_constraint(fmt), "response_format"


def precompile(engine: Any, constraint: Any, param: str) -> None:
    """Compile the constraint's automaton now (memoized by the engine's constraints module), in
    the request's thread: errors name the field, and the engine queue never waits on it."""
    if constraint is None:
        return
    if not getattr(engine.backend, "supports_constraints", False):
        raise APIError(f"{param}: the {engine.backend.name!r} backend does not support "
                       "structured outputs (use --backend reference)", param=param,
                       code="unsupported_value")
    c = _constraints(param)
    try:
        c.compile(constraint, engine.tokenizer, tuple(engine.eos_ids))
    except c.ConstraintError as e:
        raise APIError(f"{param}: {e}", param=param, code="invalid_schema") from None
