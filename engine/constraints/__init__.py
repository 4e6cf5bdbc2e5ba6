"""Structured outputs: constraint specs and their compilation into token automata.

A `Constraint` is a hashable spec (JSON Schema, any JSON object, regex, choice, tool call) that
holds its regex; `compile(constraint, tokenizer)` turns it into a `TokenAutomaton` (tables on
the CPU; `.to(device)` for the GPU) through outlines-core, memoized per (constraint, EOS ids)
and tokenizer, so a repeated schema costs a dict lookup. Anything that cannot be enforced
exactly raises `ConstraintError` when the spec is made: never silent unconstrained generation.
Knows nothing about models or sampling.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..tokenizer import Tokenizer
from .automaton import END, TokenAutomaton
from .schema import ConstraintError, check_regex, json_object_regex, schema_regex

__all__ = [
    "Constraint", "ConstraintError", "TokenAutomaton", "build", "choice", "compile", "json_object",
    "json_schema", "regex", "tool_call",
]

WS = "[ ]?"  # outlines-core's default whitespace between JSON tokens
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"  # Hermes / Qwen tool-call format
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CACHE_SIZE = 64  # automata kept per tokenizer


@dataclass(frozen=True)
class Constraint:
    """What a generation must match. Equal (and hashed) by kind and canonical spec."""

    kind: str  # "json_schema" | "json_object" | "regex" | "choice" | "tool_call"
    spec: str  # canonical JSON of the request's spec
    regex: str = field(compare=False, repr=False)  # the full-match regex over the output


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def literal(text: str) -> str:
    """A regex (outlines-core / Rust syntax) that matches exactly `text`."""
    out = []
    for c in text:
        if c in "\\.+*?()|[]{}^$#&-~":
            out.append("\\" + c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")  # Rust and Python both read \xNN
        else:
            out.append(c)
    return "".join(out)


def json_schema(schema: dict | str, strict: bool = True) -> Constraint:
    """Output is one JSON value valid under `schema` (OpenAI's strict subset when strict:
    root object, every property required, additionalProperties false)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ConstraintError(f"schema: not valid JSON ({e})") from None
    spec = _canon({"schema": schema, "strict": strict})
    return Constraint("json_schema", spec, schema_regex(schema, strict))


def json_object(max_depth: int = 2) -> Constraint:
    """Output is any JSON object whose values nest at most `max_depth` containers deeper. The
    automaton grows ~4x per level: depth 1 compiles in 0.1 s, 2 in ~6 s, 3 in minutes."""
    if not 0 <= max_depth <= 3:
        raise ConstraintError(f"json_object: max_depth must be 0..3, not {max_depth}")
    return Constraint("json_object", _canon({"max_depth": max_depth}),
                      json_object_regex(max_depth))


def regex(pattern: str) -> Constraint:
    """Output matches `pattern` as a whole (outlines-core syntax: no lookaround). A final `$`
    or `\\z` is dropped (the match is whole anyway); anywhere else an end anchor cannot match
    (the automaton is compiled with a sentinel after the pattern) and is an error."""
    if not isinstance(pattern, str) or not pattern:
        raise ConstraintError("regex: the pattern must be a non-empty string")
    body = pattern
    for end in ("$", "\\z"):
        head = body[:-len(end)]
        if body.endswith(end) and (len(head) - len(head.rstrip("\\"))) % 2 == 0:  # unescaped
            body = head
            break
    check_regex(body, "regex")
    return Constraint("regex", _canon(pattern), body)


def choice(options: list[str]) -> Constraint:
    """Output is exactly one of `options`."""
    if not options or not all(isinstance(o, str) and o for o in options):
        raise ConstraintError("choice: options must be a non-empty list of non-empty strings")
    opts = sorted(set(options))
    return Constraint("choice", _canon(opts), "(?:" + "|".join(literal(o) for o in opts) + ")")


def _tool(t: Any, i: int) -> tuple[str, dict, bool]:
    if not isinstance(t, dict) or t.get("type", "function") != "function":
        raise ConstraintError(f"tools[{i}]: must be {{'type': 'function', 'function': {{...}}}}")
    fn = t.get("function", t)
    name = fn.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise ConstraintError(f"tools[{i}].function.name: {name!r} must match "
                              f"[A-Za-z0-9_-]{{1,64}}")
    params = fn.get("parameters") or {"type": "object", "properties": {},
                                      "additionalProperties": False}
    return name, params, bool(fn.get("strict", False))


def _without(word: str) -> str:
    """Regex of the texts that do not contain `word` (whose first character occurs only once):
    each `<` starts a partial match that a wrong character (or the end) abandons."""
    c, rest = word[0], word[1:]
    assert c not in rest, "the construction needs a border-free word"
    pre = [literal(rest[:j]) for j in range(len(rest))]  # matched prefixes after c
    back = "(?:" + "|".join(p + literal(c) for p in pre) + ")*"  # c again restarts at 1
    leave = "|".join(p + f"[^{literal(c)}{literal(rest[j])}]" for j, p in enumerate(pre))
    esc = literal(c) + back
    return f"(?:[^{literal(c)}]|{esc}(?:{leave}))*(?:{esc}(?:{'|'.join(pre)}))?"


def tool_call(tools: list[dict], mode: str = "required", name: str | None = None,
              parallel: bool = False) -> Constraint:
    """One call of one of `tools` (OpenAI tool dicts) in the Hermes format
    `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, the arguments valid under
    that tool's parameters schema. mode "auto": free text without `<tool_call>`, optionally
    followed by the call(s). `name` restricts the call to that tool. `parallel` (OpenAI's
    parallel_tool_calls): one or more calls, each of any allowed tool, separated by at most
    one newline, instead of exactly one."""
    if mode not in ("required", "auto"):
        raise ConstraintError(f"tool_call: mode must be 'required' or 'auto', not {mode!r}")
    if not tools:
        raise ConstraintError("tool_call: no tools given")
    parsed = [_tool(t, i) for i, t in enumerate(tools)]
    if name is not None:
        parsed = [p for p in parsed if p[0] == name]
        if not parsed:
            raise ConstraintError(f"tool_call: no tool named {name!r}")
    calls = []
    for tname, params, strict in parsed:
        args = schema_regex(params, strict, where=f"tool {tname!r} parameters", root_object=True)
        calls.append(rf'\{{{WS}"name"{WS}:{WS}"{literal(tname)}"{WS},{WS}"arguments"{WS}:{WS}'
                     rf"(?:{args}){WS}\}}")
    call = literal(TOOL_OPEN + "\n") + "(?:" + "|".join(calls) + ")" + literal("\n" + TOOL_CLOSE)
    if parallel:
        call = f"{call}(?:\\n?{call})*"
    pattern = call if mode == "required" else f"{_without(TOOL_OPEN)}(?:{call})?"
    spec = _canon({"tools": [[n, p, s] for n, p, s in parsed], "mode": mode,
                   **({"parallel": True} if parallel else {})})
    return Constraint("tool_call", spec, pattern)


# ---- compilation and the cache ----------------------------------------------------------

_lock = threading.Lock()
_per_tokenizer: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}


def _entry(tokenizer: Tokenizer) -> dict[str, Any]:
    """This tokenizer's cache (its outlines-core Vocabulary and an LRU of automata); dropped
    when the tokenizer is garbage collected."""
    key = id(tokenizer)
    hit = _per_tokenizer.get(key)
    if hit is None or hit[0]() is not tokenizer:
        ref = weakref.ref(tokenizer, lambda _, k=key: _per_tokenizer.pop(k, None))
        hit = _per_tokenizer[key] = (ref, {"vocab": {}, "automata": OrderedDict()})
    return hit[1]


def _vocabulary(entry: dict[str, Any], tokenizer: Tokenizer, eos: tuple[int, ...]) -> Any:
    """The outlines-core Vocabulary: the ordinary tokens (EOS ids left out) and the end
    sentinel END as token id `_sentinel(...)`."""
    from outlines_core import Vocabulary

    from .automaton import token_bytes

    if "bytes" not in entry:
        entry["bytes"] = token_bytes(tokenizer)
    if eos not in entry["vocab"]:
        drop = set(eos)
        m = {b: [i for i in ids if i not in drop] for b, ids in entry["bytes"].items()}
        m = {b: ids for b, ids in m.items() if ids}
        end = END.encode()
        m[end] = [*m.get(end, []), _sentinel(tokenizer, eos)]
        entry["vocab"][eos] = Vocabulary(eos[0], m)
    return entry["vocab"][eos]


def _sentinel(tokenizer: Tokenizer, eos: tuple[int, ...]) -> int:
    """The end sentinel's token id: the first id past the tokenizer's and the EOS ids (the
    automaton's width, so never a real token; its transitions never reach the tables)."""
    return max(tokenizer.vocab_size, max(eos) + 1)


def _eos(tokenizer: Tokenizer, eos_ids: Any) -> tuple[int, ...]:
    eos = tuple(sorted(set(tokenizer.eos_ids if eos_ids is None else eos_ids)))
    if not eos:
        raise ConstraintError("constraints need an EOS token; the tokenizer has none")
    return eos


def build(constraint: Constraint, tokenizer: Tokenizer,
          eos_ids: tuple[int, ...] | frozenset[int] | None = None) -> TokenAutomaton:
    """`compile` without the automaton cache (the tokenizer's vocabulary is still reused)."""
    from outlines_core import Index

    from .automaton import from_index

    eos = _eos(tokenizer, eos_ids)
    with _lock:
        vocab = _vocabulary(_entry(tokenizer), tokenizer, eos)
    pattern = f"(?:{constraint.regex}){END}"
    try:
        index = Index(pattern, vocab)
    except Exception as e:
        msg = str(e).strip().splitlines()[0].replace(pattern, constraint.regex)
        raise ConstraintError(f"{constraint.kind}: cannot be compiled over this vocabulary "
                              f"({msg})") from None
    V = _sentinel(tokenizer, eos)
    automaton = from_index(index, eos, V, sentinel=V)
    dead = (automaton.default < 0).nonzero()  # default is -1 exactly where no token is allowed
    if dead.numel():
        raise ConstraintError(f"{constraint.kind}: state {int(dead[0])} allows no token" + (
            " (no text it allows can be written with this vocabulary)" if automaton.num_states
            == 1 else ""))
    return automaton


def compile(constraint: Constraint, tokenizer: Tokenizer,
            eos_ids: tuple[int, ...] | frozenset[int] | None = None) -> TokenAutomaton:
    """The automaton of `constraint` over `tokenizer`'s vocabulary (CPU tables), memoized per
    (constraint, EOS ids) and tokenizer. `eos_ids` (default: the tokenizer's) are the tokens
    allowed in accepting states."""
    key = (constraint, _eos(tokenizer, eos_ids))
    with _lock:
        cache: OrderedDict = _entry(tokenizer)["automata"]
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    automaton = build(constraint, tokenizer, key[1])
    with _lock:
        cache = _entry(tokenizer)["automata"]
        automaton = cache.setdefault(key, automaton)  # a concurrent compile may have won
        cache.move_to_end(key)
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return automaton
