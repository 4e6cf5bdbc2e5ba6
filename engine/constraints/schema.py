"""JSON Schema -> regex: validation, OpenAI strict-subset checks, and the outlines-core build.

Every keyword is checked against what the regex will really enforce: a keyword outlines-core
would ignore (so the output could break the schema) is a `ConstraintError` naming the keyword and
the JSON path, never silently dropped. Bounds on numbers, string formats and type unions are
rewritten here (outlines-core ignores bounds, drops `null` from type lists and has JSON-unsafe
email/uri regexes): each such node becomes a placeholder `const` whose quoted regex is replaced by
our own afterwards. Knows nothing about tokenizers or tables.
"""

from __future__ import annotations

import json
import uuid
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np

from ..errors import RequestError
from .numbers import integer_regex, number_regex

MAX_DEPTH = 10  # nesting levels of objects and arrays (OpenAI's strict-mode limit)

SUPPORTED = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "$defs", "definitions", "$ref", "minItems", "maxItems", "pattern", "format", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
}
ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly",
}
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
TYPE_KEYWORDS = {  # keywords that apply to one type only
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"pattern", "format", "minLength", "maxLength"},
    "number": set(BOUNDS),
}

_DATE = (r"[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
         r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))")  # no Feb 29
_TIME = (r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
         r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"  # unbounded: {0,61} would cost 60 states
_URI_CHARS = r"[A-Za-z0-9._~%!$&'()*+,;=:@/-]"
FORMATS = {  # string bodies (without quotes); all JSON-safe (no quote, backslash or control)
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE + "T" + _TIME,
    "email": r"[A-Za-z0-9._+-]+@" + _HOST + r"(?:\." + _HOST + r")*\.[A-Za-z]{2,6}",
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "hostname": _HOST + r"(?:\." + _HOST + r")*",
    "ipv4": r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
            r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    "uri": r"https?://" + _HOST + r"(?:\." + _HOST + r")*(?::[0-9]{1,5})?(?:/" + _URI_CHARS
           + r"*)?(?:\?" + _URI_CHARS + r"*)?",
}
_JSON_UNSAFE = {0x22, 0x5C} | set(range(0x20))  # must be escaped inside a JSON string


class ConstraintError(RequestError):
    """A constraint (schema, regex, choice, tools) that cannot be enforced exactly."""


def _fail(where: str, path: str, msg: str) -> ConstraintError:
    return ConstraintError(f"{where} at {path}: {msg}")


def check_regex(pattern: str, where: str) -> set[int]:
    """Compile `pattern` over a one-byte-per-token vocabulary (fast) and return the bytes it can
    produce; ConstraintError when outlines-core cannot build it. Built as the automata are, with
    the end sentinel (see automaton.index_graph): `a"b|a` can produce '"'."""
    from outlines_core import Index, Vocabulary

    from .automaton import END, index_graph

    vocab = Vocabulary(257, {**{bytes([b]): [b] for b in range(256)}, END.encode(): [256]})
    try:
        index = Index(f"(?:{pattern}){END}", vocab)
    except Exception as e:  # outlines-core raises ValueError with a multi-line message
        msg = str(e).strip().splitlines()[0].replace(f"(?:{pattern}){END}", pattern)
        raise ConstraintError(f"{where}: regex {pattern!r} cannot be compiled by outlines-core "
                              f"(no lookaround, backreferences, \\b or inner $): {msg}") from None
    return {int(t) for t in np.unique(index_graph(index, 256)[2])}


class _Rewriter:
    """One schema's checks and rewrite; `subs` maps placeholder strings to regexes."""

    def __init__(self, root: dict, strict: bool, where: str):
        self.root, self.strict, self.where = root, strict, where
        self.nonce = uuid.uuid4().hex[:8]
        self.subs: dict[str, str] = {}

    def fail(self, path: str, msg: str) -> ConstraintError:
        return _fail(self.where, path, msg)

    def placeholder(self, regex: str) -> dict:
        key = f"AFPH{self.nonce}N{len(self.subs)}"
        self.subs[key] = regex
        return {"const": key}

    def node(self, s: Any, path: str) -> Any:
        if not isinstance(s, dict):
            raise self.fail(path, "boolean schemas are not supported (use an object schema)")
        for k in s:
            if k not in SUPPORTED and k not in ANNOTATIONS:
                raise self.fail(path, f"'{k}' is not supported")
        if "$ref" in s:
            extra = set(s) - ANNOTATIONS - {"$ref", "$defs", "definitions"}
            if extra:
                raise self.fail(path, f"'$ref' with sibling keyword '{sorted(extra)[0]}' is "
                                      "not supported")
            self.resolve(s["$ref"], path)
        s = dict(s)
        for key in ("$defs", "definitions"):
            if key in s:
                s[key] = {n: self.node(d, f"{path}.{key}.{n}") for n, d in s[key].items()}
        defs = {k: s[k] for k in ("$defs", "definitions") if k in s}
        if "enum" in s or "const" in s or "$ref" in s:
            return s
        t = s.get("type")
        if isinstance(t, list):
            if not t:
                raise self.fail(path, "'type' is an empty list")
            rest = {k: v for k, v in s.items() if k not in ("type", "$defs", "definitions")}
            return {"anyOf": [self.node({**rest, "type": x}, path) for x in t]} | defs
        if "anyOf" in s:
            extra = set(s) - ANNOTATIONS - {"anyOf", "$defs", "definitions"}
            if extra:
                raise self.fail(path, f"'anyOf' with sibling keyword '{sorted(extra)[0]}' is "
                                      "not supported")
            s["anyOf"] = [self.node(x, f"{path}.anyOf[{i}]") for i, x in enumerate(s["anyOf"])]
            return s
        if t is None:  # untyped: the type its keywords belong to, if they name one
            kinds = {k for k, keys in TYPE_KEYWORDS.items() if keys & set(s)}
            if len(kinds) > 1:
                raise self.fail(path, f"keywords of several types ({', '.join(sorted(kinds))}) "
                                      "without 'type'")
            if kinds:
                t = s["type"] = kinds.pop()
        elif t not in TYPES:
            raise self.fail(path, f"'type' {t!r} is not a JSON Schema type")
        for other, keys in TYPE_KEYWORDS.items():  # outlines-core would act on them
            if other != t and not (other == "number" and t == "integer"):
                for k in keys & set(s):
                    del s[k]
        if t in ("integer", "number") and any(b in s for b in BOUNDS):
            return self.number(s, path) | defs
        if t == "string":
            return self.string(s, path)
        if t == "object":
            return self.obj(s, path)
        if "items" in s:
            s["items"] = self.node(s["items"], f"{path}.items")
        return s

    def number(self, s: dict, path: str) -> dict:
        lo = hi = None  # (value, strict), the tighter bound when two are given
        for key in BOUNDS:
            if key in s:
                b = (Decimal(str(s[key])), key.startswith("exclusive"))
                if key.endswith("inimum"):
                    lo = b if lo is None or (b[0], b[1]) > lo else lo
                else:
                    hi = b if hi is None or (-b[0], b[1]) > (-hi[0], hi[1]) else hi
        if s["type"] == "integer":  # the integer bounds: ceil/floor, +-1 when exclusive
            ilo = None if lo is None else (int(lo[0].to_integral_value(ROUND_FLOOR)) + 1 if lo[1]
                                           else int(lo[0].to_integral_value(ROUND_CEILING)))
            ihi = None if hi is None else (int(hi[0].to_integral_value(ROUND_CEILING)) - 1 if hi[1]
                                           else int(hi[0].to_integral_value(ROUND_FLOOR)))
            r = integer_regex(ilo, ihi)
        else:
            r = number_regex(lo and lo[0], bool(lo and lo[1]), hi and hi[0], bool(hi and hi[1]))
        if r is None:
            raise self.fail(path, "the bounds leave no value (minimum above maximum)")
        return self.placeholder(r)

    def string(self, s: dict, path: str) -> dict:
        if "format" in s:
            fmt = s["format"]
            if fmt not in FORMATS:
                raise self.fail(path, f"'format' {fmt!r} is not supported (supported: "
                                      f"{', '.join(sorted(FORMATS))})")
            for k in ("pattern", "minLength", "maxLength"):
                if k in s:
                    raise self.fail(path, f"'{k}' together with 'format' is not supported")
            return self.placeholder(f'"{FORMATS[fmt]}"')
        if "pattern" in s:
            if "minLength" in s or "maxLength" in s:
                raise self.fail(path, "'minLength'/'maxLength' together with 'pattern' is not "
                                      "supported")
            p = s["pattern"]
            body = p[1:] if p.startswith("^") else p
            body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
            unsafe = check_regex(body, f"{self.where} at {path}: 'pattern'") & _JSON_UNSAFE
            if unsafe:
                raise self.fail(path, f"'pattern' {p!r} can produce {chr(min(unsafe))!r}, which "
                                      "JSON must escape; exclude '\"', '\\\\' and control "
                                      "characters (e.g. [^\"\\\\] instead of .)")
            return self.placeholder(f'"(?:{body})"')
        if s.get("minLength", 0) > s.get("maxLength", float("inf")):
            raise self.fail(path, "'minLength' is above 'maxLength'")
        return s

    def obj(self, s: dict, path: str) -> dict:
        props = s.get("properties", {})
        req = s.get("required", [])
        for r in req:
            if r not in props:
                raise self.fail(path, f"'required' names {r!r}, which is not in 'properties'")
        addl = s.get("additionalProperties", None if self.strict else True)
        if self.strict:
            if addl is not False:
                raise self.fail(path, "strict mode needs 'additionalProperties': false")
            missing = [p for p in props if p not in req]
            if missing:
                raise self.fail(path, f"strict mode needs every property in 'required' "
                                      f"(missing: {', '.join(missing)})")
        if isinstance(addl, dict):
            s["additionalProperties"] = self.node(addl, f"{path}.additionalProperties")
        if "properties" in s:
            s["properties"] = {k: self.node(v, f"{path}.properties.{k}") for k, v in props.items()}
        return s

    def resolve(self, ref: Any, path: str) -> tuple[str, dict]:
        parts = ref.split("/") if isinstance(ref, str) else []
        if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
            raise self.fail(path, f"'$ref' {ref!r} is not supported (only '#/$defs/NAME')")
        target = self.root.get(parts[1], {}).get(parts[2])
        if target is None:
            raise self.fail(path, f"'$ref' {ref!r} does not resolve")
        return ref, target

    def depth(self, s: Any, path: str, refs: tuple[str, ...] = ()) -> int:
        """Nesting levels of objects/arrays below `s`, following $ref (cycles are errors)."""
        if not isinstance(s, dict):
            return 0
        if "$ref" in s:
            ref, target = self.resolve(s["$ref"], path)
            if ref in refs:
                raise self.fail(path, f"recursive '$ref' {ref!r} is not supported (it nests "
                                      f"without bound; the limit is {MAX_DEPTH} levels)")
            return self.depth(target, path, refs + (ref,))
        kids = [(v, f"{path}.properties.{k}") for k, v in s.get("properties", {}).items()]
        kids += [(v, f"{path}.anyOf[{i}]") for i, v in enumerate(s.get("anyOf", []))]
        for key in ("items", "additionalProperties"):
            if isinstance(s.get(key), dict):
                kids.append((s[key], f"{path}.{key}"))
        t = s.get("type")
        t = set(t) if isinstance(t, list) else {t}
        own = int(bool(t & {"object", "array"}) or "properties" in s or "items" in s)
        d = own + max((self.depth(v, p, refs) for v, p in kids), default=0)
        if d > MAX_DEPTH:
            raise self.fail(path, f"the schema nests {d} levels here; the limit is {MAX_DEPTH}")
        return d


def schema_regex(schema: Any, strict: bool = True, where: str = "schema",
                 root_object: bool | None = None) -> str:
    """The regex of the JSON texts valid under `schema`; ConstraintError when it cannot be
    enforced exactly. `root_object` (default: strict) requires `"type": "object"` at the root."""
    import jsonschema
    from outlines_core.json_schema import build_regex_from_schema

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ConstraintError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(schema, dict):
        raise ConstraintError(f"{where} at $: a schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConstraintError(f"{where} at {e.json_path}: {e.message}") from None
    if (strict if root_object is None else root_object) and schema.get("type") != "object":
        raise ConstraintError(f"{where} at $: the root must be 'type': 'object'")
    rw = _Rewriter(schema, strict, where)
    rewritten = rw.node(schema, "$")
    rw.depth(schema, "$")
    try:
        regex = build_regex_from_schema(json.dumps(rewritten))
    except Exception as e:
        msg = str(e).strip().splitlines()[0]
        raise ConstraintError(f"{where} at $: outlines-core cannot build it: {msg}") from None
    for key, sub in rw.subs.items():
        regex = regex.replace(f'"{key}"', f"(?:{sub})")
    assert f"AFPH{rw.nonce}" not in regex, "a schema placeholder was not substituted"
    return regex


def _value_regex(depth: int) -> str:
    from outlines_core.json_schema import NUMBER, STRING
    from outlines_core.json_schema import WHITESPACE as WS

    alts = [STRING, NUMBER, "true", "false", "null"]
    if depth > 0:
        v = _value_regex(depth - 1)
        alts.append(rf"\[{WS}(?:{v}(?:{WS},{WS}{v})*)?{WS}\]")
        alts.append(rf"\{{{WS}(?:{STRING}{WS}:{WS}{v}(?:{WS},{WS}{STRING}{WS}:{WS}{v})*)?{WS}\}}")
    return "(?:" + "|".join(alts) + ")"


def json_object_regex(depth: int = 2) -> str:
    """Any JSON object whose values nest at most `depth` more containers deep."""
    from outlines_core.json_schema import STRING
    from outlines_core.json_schema import WHITESPACE as WS

    v = _value_regex(depth)
    return rf"\{{{WS}(?:{STRING}{WS}:{WS}{v}(?:{WS},{WS}{STRING}{WS}:{WS}{v})*)?{WS}\}}"
