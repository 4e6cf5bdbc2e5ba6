"""Structured outputs: schema checks, automata, the cache, and constrained generation.

Generation runs on the tiny random checkpoint (every corpus schema, greedy and sampled) and on
the embedded SmolLM2 (a subset). A random model has no reason to close a string or stop a
number, so on it the corpus runs through `bounded()`: strings get a maxLength, arrays a maxItems,
numbers become bounded integers, email/uri/hostname formats a short pattern. Each bounded schema
accepts a subset of the original, and the output is validated against the original. Every
generation here must end with finish_reason "stop" (none may be cut by max_tokens).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import torch

from agentfast.engine import Engine, SamplingParams
from agentfast.engine import constraints as C
from agentfast.engine.errors import RequestError

CORPUS = json.loads((Path(__file__).parent / "data" / "schemas.json").read_text())
BY_NAME = {e["name"]: e for e in CORPUS}
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER
SHORT_FORMATS = {"email": r"^[a-z]{1,5}@[a-z]{1,5}\.com$", "uri": r"^https://[a-z]{1,5}\.org$",
                 "hostname": r"^[a-z]{1,5}\.[a-z]{2,3}$"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
READ = {"type": "function", "function": {"name": "read_file", "strict": True, "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}, "lines": {
        "type": "integer", "minimum": 1, "maximum": 500}}, "required": ["path", "lines"],
    "additionalProperties": False}}}
CALL = re.compile(r"<tool_call>\n(.*)\n</tool_call>", re.S)


def validate(schema: dict, text: str) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER).validate(
        json.loads(text))


def bounded(s):
    """A schema accepting a subset of `s` whose every value is short (see the module doc)."""
    if isinstance(s, list):
        return [bounded(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = {k: v if k in ("enum", "const", "required") else bounded(v) for k, v in s.items()}
    if "properties" in s:
        s["properties"] = {k: bounded(v) for k, v in s["properties"].items()}
    elif isinstance(s.get("additionalProperties"), dict):  # a map: one fixed key instead
        s.update(properties={"k": s.pop("additionalProperties")}, required=["k"],
                 additionalProperties=False)
    t = s.get("type")
    types = set(t) if isinstance(t, list) else {t}
    if s.get("format") in SHORT_FORMATS:
        s["pattern"] = SHORT_FORMATS[s.pop("format")]
    free = not any(k in s for k in ("enum", "const", "format", "pattern"))
    if "string" in types and free:
        s["maxLength"] = min(s.get("maxLength", 4), 4)
    if "array" in types:
        s["maxItems"] = min(s.get("maxItems", 2), 2)
    if types & {"number", "integer"} and free:
        s["type"] = [x if x != "number" else "integer" for x in t] if isinstance(t, list) else (
            "integer")
        if not any(k in s for k in ("minimum", "maximum", "exclusiveMinimum",
                                    "exclusiveMaximum")):
            s["minimum"], s["maximum"] = -99, 99
    return s


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in this module: with two, a core busy elsewhere (another test run)
    makes every matmul wait at OpenMP barriers (measured: 30x slower decode)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def generate(engine: Engine, constraint: C.Constraint, temperature: float, seed: int = 0,
             prompt: str | None = None, max_tokens: int = 400):
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                            constraint=constraint)
    if prompt is None:
        return engine.generate("<|im_start|>user\nJSON please<|im_end|>\n", params)
    return engine.chat([{"role": "user", "content": prompt}], params)


# ---- (a) the corpus: every schema compiles and every generation validates -------------------

def test_corpus_is_large_and_diverse():
    text = json.dumps(CORPUS)
    assert len(CORPUS) >= 40
    for needle in ('"$ref"', '"anyOf"', '"enum"', '"format": "date-time"', '"pattern"',
                   '"minimum"', '"maxItems"', '["string", "null"]', '"$defs"'):
        assert needle in text, needle


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_corpus_on_tiny_model(tiny, temperature):
    failures = []
    for entry in CORPUS:
        c = C.json_schema(bounded(entry["schema"]), strict=entry["strict"])
        r = generate(tiny, c, temperature, seed=len(entry["name"]))
        try:
            assert r.finish_reason == "stop", f"finish_reason {r.finish_reason}"
            validate(entry["schema"], r.text)
        except (AssertionError, ValueError, jsonschema.ValidationError) as e:
            failures.append(f"{entry['name']}: {str(e).splitlines()[0]} in {r.text[:80]!r}")
    assert not failures, "\n".join(failures)


EMBEDDED = ["get_weather", "person", "sentiment", "nullable_fields", "anyof_shapes", "dates",
            "defs_basic", "patterns", "move_robot"]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_corpus_on_embedded_model(smol, temperature):
    failures = []
    for name in EMBEDDED:
        entry = BY_NAME[name]
        c = C.json_schema(entry["schema"], strict=entry["strict"])
        prompt = f"Write an example {name.replace('_', ' ')} as JSON."
        r = generate(smol, c, temperature, prompt=prompt, max_tokens=80)
        try:
            assert r.finish_reason == "stop", f"finish_reason {r.finish_reason}"
            validate(entry["schema"], r.text)
        except (AssertionError, ValueError, jsonschema.ValidationError) as e:
            failures.append(f"{name}: {str(e).splitlines()[0]} in {r.text[:80]!r}")
    assert not failures, "\n".join(failures)


# ---- (b) tables: masks, CSR rows and flags agree ---------------------------------------------

@pytest.mark.parametrize("name", ["get_weather", "nullable_fields", "defs_chain", "patterns"])
def test_mask_of_every_state_is_its_allowed_set(tiny, name):
    a = C.compile(C.json_schema(BY_NAME[name]["schema"]), tiny.tokenizer, tuple(tiny.eos_ids))
    eos = set(a.eos_ids)
    V = tiny.config.vocab_size + 5  # logits wider than the table: the extra ids never allowed
    for s in range(a.num_states):
        allowed = a.allowed(s)
        assert torch.equal(a.allowed_mask(s, V).nonzero().flatten().int(), allowed)
        ids = allowed.tolist()
        assert ids == sorted(set(ids)) and ids, f"state {s}: row unsorted or empty"
        assert a.is_accepting(s) == bool(eos & set(ids))
        assert a.is_done(s) == (set(ids) <= eos)
        assert a.forced_token(s) == (ids[0] if len(ids) == 1 else -1)
        for t in ids[:50]:
            nxt = a.next(s, t)
            assert 0 <= nxt < a.num_states and (t not in eos or nxt == s)
        outside = next(t for t in range(V) if t not in set(ids))
        assert a.next(s, outside) == -1


def test_masking_logits_and_walking_to_the_end(tiny):
    a = C.compile(C.choice(["yes", "no"]), tiny.tokenizer)
    logits = torch.randn(tiny.config.vocab_size)
    masked = a.mask_logits(logits, a.state0)
    assert torch.isfinite(masked).sum() == a.allowed(a.state0).numel()
    state, text = a.state0, []
    while not a.is_done(state):
        tok = int(a.allowed(state)[0])
        text.append(tok)
        state = a.next(state, tok)
    assert tiny.tokenizer.decode(text) in ("yes", "no") and a.is_accepting(state)


# ---- (c) regex, choice, tool calls ---------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_regex_and_choice(tiny, temperature):
    cases = [(C.regex(r"[0-9]{3}-[a-z]{2,4}"), r"[0-9]{3}-[a-z]{2,4}"),
             (C.regex(r"(cat|dog)s?( and (cat|dog)s?)?"), r"(cat|dog)s?( and (cat|dog)s?)?"),
             (C.choice(["yes", "no", "maybe later", "a.b*c"]), r"yes|no|maybe later|a\.b\*c")]
    for c, pattern in cases:
        for seed in range(3):
            r = generate(tiny, c, temperature, seed=seed)
            assert r.finish_reason == "stop" and re.fullmatch(pattern, r.text), r.text


def some_finish(results) -> list:
    """Unbounded outputs (any JSON object, free text) from a random model: a run may hit
    max_tokens ("length", not a failure: every token was still allowed); most must stop."""
    done = [r for r in results if r.finish_reason == "stop"]
    assert len(done) * 2 > len(results), [r.finish_reason for r in results]
    return done


def test_json_object(tiny):
    runs = [generate(tiny, C.json_object(max_depth=1), 1.0, seed=s, max_tokens=480)
            for s in range(6)]
    for r in some_finish(runs):
        assert isinstance(json.loads(r.text), dict), r.text


def check_call(text: str, tools: list[dict]) -> str:
    m = CALL.fullmatch(text)
    assert m, f"not a tool call: {text!r}"
    call = json.loads(m.group(1))
    fn = {t["function"]["name"]: t["function"] for t in tools}[call["name"]]
    validate(fn["parameters"], json.dumps(call["arguments"]))
    assert set(call) == {"name", "arguments"}
    return call["name"]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tool_call_required_and_named(tiny, temperature):
    tools = [WEATHER, READ]
    small = [{"type": "function", "function": {**t["function"], "parameters": bounded(
        t["function"]["parameters"])}} for t in tools]
    names = set()
    for seed in range(4):
        r = generate(tiny, C.tool_call(small), temperature, seed=seed)
        assert r.finish_reason == "stop"
        names.add(check_call(r.text, tools))
    r = generate(tiny, C.tool_call(small, name="read_file"), temperature)
    assert check_call(r.text, tools) == "read_file"


def test_tool_call_auto(tiny):
    c = C.tool_call([WEATHER], mode="auto")
    rx = re.compile(c.regex, re.S)
    assert rx.fullmatch("Sure, it is sunny <tool_ in Paris.")
    assert rx.fullmatch('Let me check.<tool_call>\n{"name": "get_weather", "arguments": '
                        '{"city": "Paris"}}\n</tool_call>')
    assert not rx.fullmatch("text <tool_call>\n{broken")
    assert not rx.fullmatch('<tool_call>\n{"name": "other", "arguments": {}}\n</tool_call>')
    runs = [generate(tiny, c, 1.0, seed=seed, max_tokens=480) for seed in range(6)]
    for r in some_finish(runs):
        assert "<tool_call>" not in r.text or check_call(r.text[r.text.index("<tool_call>"):],
                                                         [WEATHER])


@pytest.mark.slow
def test_tool_calls_and_json_object_on_embedded_model(smol):
    tools = [WEATHER, READ]
    prompt = "What is the weather in Paris? Call a tool."
    r = generate(smol, C.tool_call(tools), 0.0, prompt=prompt, max_tokens=60)
    assert r.finish_reason == "stop" and check_call(r.text, tools) == "get_weather", r.text
    r = generate(smol, C.tool_call(tools, mode="auto"), 0.0, prompt=prompt, max_tokens=40)
    # free text may run to max_tokens ("length"); a call, if any, must be complete and valid
    assert "<tool_call>" not in r.text or check_call(r.text[r.text.index("<tool_call>"):], tools)
    prompt = "Read the file README.md with a tool."
    r = generate(smol, C.tool_call(tools), 0.0, prompt=prompt, max_tokens=60)
    assert r.finish_reason == "stop" and check_call(r.text, tools) == "read_file", r.text
    for temperature in (0.0, 1.0):
        r = generate(smol, C.json_object(max_depth=1), temperature, max_tokens=60,
                     prompt="Give the name and age of a cat as JSON.")
        assert r.finish_reason == "stop" and isinstance(json.loads(r.text), dict), r.text


# ---- (d) what cannot be enforced exactly is an error naming keyword and path ----------------

def strict_obj(props: dict, **kw) -> dict:
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False, **kw}


DEEP = {"type": "boolean"}
for _ in range(11):
    DEEP = strict_obj({"x": DEEP})
UNSUPPORTED = [  # (schema, strict, words the message must contain)
    (strict_obj({"x": {"not": {"type": "string"}}}), True, ["'not'", "$.properties.x"]),
    (strict_obj({"x": {"type": "string", "if": {}, "then": {}}}), True, ["'if'", "$.properties.x"]),
    (strict_obj({"x": {"allOf": [{"type": "string"}]}}), True, ["'allOf'", "$.properties.x"]),
    (strict_obj({"x": {"oneOf": [{"type": "string"}]}}), True, ["'oneOf'"]),
    (strict_obj({"x": {"type": "integer", "multipleOf": 5}}), True, ["'multipleOf'"]),
    (strict_obj({"x": {"type": "array", "uniqueItems": True}}), True, ["'uniqueItems'"]),
    (strict_obj({"x": {"type": "object", "patternProperties": {}}}), True,
     ["'patternProperties'"]),
    (strict_obj({"x": {"type": "array", "prefixItems": [{"type": "string"}]}}), True,
     ["'prefixItems'"]),
    (strict_obj({"a": {"type": "array", "items": {"type": "object", "minProperties": 1}}}), True,
     ["'minProperties'", "$.properties.a.items"]),
    (strict_obj({"x": {"type": "string", "format": "duration"}}), True, ["'format'", "duration"]),
    (strict_obj({"x": {"type": "string", "pattern": "(?=a)b"}}), True,
     ["'pattern'", "$.properties.x", "cannot be compiled"]),
    (strict_obj({"x": {"type": "string", "pattern": "^.+$"}}), True, ["'pattern'", "escape"]),
    (strict_obj({"x": {"type": "integer", "minimum": 5, "maximum": 2}}), True, ["bounds"]),
    (strict_obj({"n": {"$ref": "#/$defs/node"}}, **{"$defs": {"node": strict_obj(
        {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}})}}), True,
     ["recursive '$ref'", "$.properties.n"]),
    (strict_obj({"x": {"$ref": "https://example.com/s.json"}}), True, ["'$ref'"]),
    (strict_obj({"x": {"$ref": "#/$defs/missing"}}), True, ["does not resolve"]),
    (DEEP, True, ["nests 11 levels", "$"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, True,
     ["additionalProperties", "$"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
     True, ["'required'", "missing: a"]),
    ({"type": "object", "properties": {}, "required": ["b"]}, False, ["'required'", "'b'"]),
    ({"type": "array", "items": {"type": "string"}}, True, ["root", "object"]),
    ({"type": "object", "properties": {"x": True}}, False, ["boolean schemas",
                                                             "$.properties.x"]),
    ({"type": 5}, False, ["$.type"]),
    (strict_obj({"x": {"type": "object", "anyOf": [{"type": "null"}]}}), True,
     ["'anyOf' with sibling keyword 'type'", "$.properties.x"]),
    (strict_obj({"x": {"minimum": 1, "pattern": "a"}}), True, ["several types"]),
]


@pytest.mark.parametrize("schema,strict,words", UNSUPPORTED,
                         ids=[" ".join(w[:1]) for _, _, w in UNSUPPORTED])
def test_unsupported_schemas_raise(schema, strict, words):
    with pytest.raises(C.ConstraintError) as e:
        C.json_schema(schema, strict=strict)
    msg = str(e.value)
    assert msg.startswith("schema at $"), msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert isinstance(e.value, RequestError)


def test_bounds_unions_and_refs_are_exact():
    schema = strict_obj({
        "i": {"type": "integer", "minimum": -12, "exclusiveMaximum": 30},
        "f": {"$ref": "#/$defs/f"},
        "m": {"type": ["object", "null"], **strict_obj({"a": {"type": "boolean"}})}},
        **{"$defs": {"f": {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.25}}})
    rx = re.compile(C.json_schema(schema).regex)
    validator = jsonschema.Draft202012Validator(schema)
    values = ["-13", "-12", "-1", "0", "7", "29", "30", "-1.5", "-1.49", "-0.5", "0.0", "2.25",
              "2.250", "2.2500001", "2.249", "1e2", "-0", "00", "1."]
    for i in ["-13", "-12", "0", "29", "30"]:
        for f in values:
            for m in ("null", '{"a": true}'):
                text = f'{{"i": {i}, "f": {f}, "m": {m}}}'
                try:
                    ok = validator.is_valid(json.loads(text))
                except ValueError:
                    ok = False
                if f in ("-0", "1e2"):  # valid JSON numbers the regex never writes
                    ok = False
                assert bool(rx.fullmatch(text)) == ok, text


def test_nesting_of_ten_levels_is_accepted():
    c = C.json_schema(BY_NAME["deep10"]["schema"])
    assert c.kind == "json_schema"


@pytest.mark.parametrize("make,words", [
    (lambda: C.regex("(?=a)b"), ["regex", "cannot be compiled"]),
    (lambda: C.regex(""), ["regex"]),
    (lambda: C.choice([]), ["choice"]),
    (lambda: C.json_object(max_depth=4), ["max_depth"]),
    (lambda: C.tool_call([]), ["no tools"]),
    (lambda: C.tool_call([WEATHER], mode="none"), ["mode"]),
    (lambda: C.tool_call([WEATHER], name="nope"), ["'nope'"]),
    (lambda: C.tool_call([{"type": "function", "function": {"name": "a b"}}]), ["name"]),
    (lambda: C.tool_call([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"not": {}}}}}}]),
     ["tool 'f' parameters at $.properties.x", "'not'"]),
])
def test_other_constraint_errors(make, words):
    with pytest.raises(C.ConstraintError) as e:
        make()
    for w in words:
        assert w in str(e.value)


def test_params_and_backend_checks(tiny, monkeypatch):
    with pytest.raises(RequestError):
        SamplingParams(constraint={"type": "object"})
    p = SamplingParams(constraint=C.choice(["a", "b"]))
    assert p == SamplingParams(constraint=C.choice(["b", "a"])) and hash(p)
    monkeypatch.setattr(tiny.backend, "supports_constraints", False)
    with pytest.raises(RequestError, match="does not support constraints"):
        tiny.generate("hi", p)


# ---- (e) the cache, limits -------------------------------------------------------------------

def test_cache_returns_the_same_automaton(tiny, smol):
    schema = BY_NAME["person"]["schema"]
    a = C.compile(C.json_schema(schema), tiny.tokenizer)
    assert C.compile(C.json_schema(json.loads(json.dumps(schema))), tiny.tokenizer) is a
    assert C.compile(C.json_schema(schema), smol.tokenizer) is not a
    assert C.compile(C.json_schema(schema), tiny.tokenizer, eos_ids=(0, 2)) is not a
    assert C.build(C.json_schema(schema), tiny.tokenizer) is not a
    assert a.to("cpu") is a


def test_length_and_stop_at_the_limit(tiny):
    c = C.regex(r"abc abc abc")
    full = generate(tiny, c, 0.0)
    n = len(full.token_ids)
    assert full.finish_reason == "stop" and full.text == "abc abc abc" and n > 2
    exact = generate(tiny, c, 0.0, max_tokens=n)  # complete at the limit: still "stop"
    assert exact.finish_reason == "stop" and exact.text == full.text
    cut = generate(tiny, c, 0.0, max_tokens=2)
    assert cut.finish_reason == "length" and full.text.startswith(cut.text)
    ignore = tiny.generate("x", SamplingParams(max_tokens=40, ignore_eos=True, constraint=c))
    assert ignore.finish_reason == "stop" and ignore.text == "abc abc abc"
