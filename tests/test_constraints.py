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
from agentfast.engine.constraints.automaton import END, token_bytes
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


def outlines_index(constraint: C.Constraint, tokenizer, eos: tuple[int, ...]):
    """outlines-core's own Index of `constraint` followed by the end sentinel (the full
    transition dict the automaton was built from), over a vocabulary rebuilt here the way the
    compiler builds it: the ordinary tokens and the sentinel as the id after the vocabulary."""
    from outlines_core import Index, Vocabulary

    m = {b: [i for i in ids if i not in eos] for b, ids in token_bytes(tokenizer).items()}
    m = {b: ids for b, ids in m.items() if ids}
    sentinel = max(tokenizer.vocab_size, max(eos) + 1)
    m[END.encode()] = [*m.get(END.encode(), []), sentinel]
    index = Index(f"(?:{constraint.regex}){END}", Vocabulary(eos[0], m))
    return index, sentinel


def check_against_index(a: C.TokenAutomaton, index, sentinel: int, name: str,
                        spelled: dict[int, bytes]) -> int:
    """Walk outlines-core's states (of the regex + sentinel) and ours side by side from the
    start. A state of theirs is accepting when the sentinel leads to a final state, and live
    when an accepting state is reachable from it. In every live state: the same allowed set
    as theirs (ordinary tokens into live states, EOS exactly when accepting), and for every
    allowed token `next` (default + exceptions) lands on the state that corresponds to
    outlines-core's target (a bijection). The transitions left out (into dead states) may
    only be tokens with the sentinel's first byte. Returns the tokens checked."""
    trans, eos = index.get_transitions(), set(a.eos_ids)
    finals = set(index.get_final_states())
    real = {o: {t: x for t, x in d.items() if t not in eos and t != sentinel}
            for o, d in trans.items()}
    accepting = {o for o, d in trans.items() if d.get(sentinel) in finals}
    preds: dict[int, set[int]] = {}
    for o, d in real.items():
        for x in d.values():
            preds.setdefault(x, set()).add(o)
    live, todo = set(accepting), list(accepting)
    while todo:
        for p in preds.get(todo.pop(), ()):
            if p not in live:
                live.add(p)
                todo.append(p)
    start = index.get_initial_state()
    assert start in live, name
    ours, theirs = {start: a.state0}, {a.state0: start}
    todo, checked = [start], 0
    while todo:
        o = todo.pop()
        n = ours[o]
        full = {t: x for t, x in real.get(o, {}).items() if x in live}
        assert all(END.encode()[:1] in spelled[t] for t in set(real.get(o, {})) - set(full))
        full.update({t: o for t in eos} if o in accepting else {})  # EOS loops in accepting
        assert a.is_accepting(n) == (o in accepting), (name, n)
        assert set(a.allowed(n).tolist()) == set(full), (name, n)
        dense = a.next_states(n)
        for t, x in sorted(full.items()):
            got = a.next(n, t)
            assert int(dense[t]) == got, (name, n, t)
            if x not in ours:
                assert got not in theirs, (name, n, t)  # two outlines states, one of ours
                ours[x], theirs[got] = got, x
                todo.append(x)
            assert ours[x] == got, (name, n, t)
            checked += 1
        assert int((dense >= 0).sum()) == len(full), (name, n)
    assert len(ours) == a.num_states, name
    return checked


def test_compact_transitions_equal_outlines_index_on_the_corpus(tiny):
    """Every state of every corpus schema: the default-next-state form gives the full
    transition table's next state for every allowed token, and it is smaller."""
    tok, eos = tiny.tokenizer, tuple(sorted(tiny.eos_ids))
    spelled = {i: b for b, ids in token_bytes(tok).items() for i in ids}
    exceptions = 0
    cases = [(e["name"], C.json_schema(e["schema"], strict=e["strict"])) for e in CORPUS]
    cases += [("choice", C.choice(["alpha", "alphabet", "al"])), ("digits", C.regex("[0-9]+")),
              ("auto", C.tool_call([READ], mode="auto")),
              ("parallel", C.tool_call([READ, WEATHER], parallel=True))]
    for name, c in cases:
        a = C.compile(c, tok, eos)
        index, sentinel = outlines_index(c, tok, eos)
        assert check_against_index(a, index, sentinel, name, spelled) == a.num_transitions
        assert a.nbytes <= a.full_csr_nbytes
        exceptions += a.num_exceptions
    assert exceptions > 0  # the corpus exercises the exception rows too


def test_padded_automaton_disallows_the_added_ids(tiny):
    a = C.compile(C.json_schema(BY_NAME["get_weather"]["schema"]), tiny.tokenizer)
    V = a.vocab_size + 100  # a model with more embedding rows than the tokenizer has ids
    p = a.padded(V)
    assert p.bitmask.shape == (a.num_states, (V + 31) // 32) and p.vocab_size == V
    assert torch.equal(p.bitmask[:, :a.bitmask.shape[1]], a.bitmask)
    assert not p.bitmask[:, a.bitmask.shape[1]:].any()
    for s in range(a.num_states):
        assert torch.equal(p.allowed(s), a.allowed(s))
        n = a.next_states(s).numel()
        assert torch.equal(p.next_states(s)[:n], a.next_states(s))
        assert (p.next_states(s)[n:] == -1).all() and p.next(s, V - 1) == -1
        assert not p.allowed_mask(s, V)[a.vocab_size:].any()
    assert p.nbytes > a.nbytes and p.padded(V) is not p
    with pytest.raises(ValueError):
        a.padded(a.vocab_size - 1)


def test_gpu_bench_host_parts(tiny):
    """The GPU bench's CPU side: its constraints compile, the vocabulary fit, and the host
    check of the device walk (restarts after EOS or a done state; a wrong state fails)."""
    from agentfast.engine.constraints import gpu_bench as gb

    tok = tiny.tokenizer
    a = C.compile(gb.make_constraint("tool_call"), tok)
    assert gb.fit_vocab(a, a.vocab_size) is a
    assert gb.fit_vocab(a, a.vocab_size + 64).bitmask.shape[1] == a.bitmask.shape[1] + 2
    with pytest.raises(ValueError, match="tokenizer"):
        gb.fit_vocab(a, a.vocab_size - 1)
    gen = torch.Generator().manual_seed(0)
    state, toks, states, restarts = a.state0, [], [], 0
    while restarts < 3:  # three complete tool calls, walked as the device would
        allowed = a.allowed(state)
        t = int(allowed[torch.randint(len(allowed), (1,), generator=gen)])
        state = a.next(state, t)
        toks.append(t)
        states.append(state)
        if t in a.eos_ids or a.is_done(state):
            state, restarts = a.state0, restarts + 1
    assert gb.check_walk(a, a.state0, toks, states) == 3
    i = len(toks) // 2
    bad = states[:i] + [(states[i] + 1) % a.num_states] + states[i + 1:]
    with pytest.raises(AssertionError, match=f"step {i}:"):
        gb.check_walk(a, a.state0, toks, bad)
    base, slow = gb.summarize([1.0, 1.0, 4.0]), gb.summarize([1.02, 1.02, 4.0])
    assert base["median_ms"] == 1.0 and base["mean_ms"] == 2.0
    assert gb.overhead_pct(slow, base)["median"] == pytest.approx(2.0)
    if not torch.cuda.is_available():
        assert gb.main(["--models", "smollm2-135m"]) == 2  # no GPU, no numbers


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


# ---- (c') states whose text is complete but may go on (outlines-core drops those steps) ----

def words(*vocab: str):
    """A tokenizer whose tokens are exactly `vocab` (ids 0..), then <eos>."""
    from tokenizers import Tokenizer as HF
    from tokenizers import models

    from agentfast.engine.tokenizer import Tokenizer

    ids = {w: i for i, w in enumerate(vocab)}
    hf = HF(models.WordLevel({**ids, "<eos>": len(ids)}, unk_token="<eos>"))
    hf.add_special_tokens(["<eos>"])
    return Tokenizer(hf, eos_ids=(len(ids),))


def walk(a: C.TokenAutomaton, ids: list[int]) -> int:
    s = a.state0
    for t in ids:
        s = a.next(s, t)
        assert s >= 0, f"token {t} not allowed"
    return s


def test_accepting_states_can_go_on():
    """outlines-core 0.2.14 alone: Index(x(?:ab)*) allows only EOS after `x`. Compiled with
    the end sentinel, `x`, `xab`, `xabab` are complete and each can go on with `a`."""
    tok = words("x", "a", "b")
    a = C.compile(C.regex(r"x(?:ab)*"), tok)
    assert a.allowed(a.state0).tolist() == [0]
    for n in range(3):
        s = walk(a, [0] + [1, 2] * n)
        assert a.is_accepting(s) and not a.is_done(s) and a.allowed(s).tolist() == [1, 3]
        assert a.next(s, 3) == s and not a.is_accepting(walk(a, [0] + [1, 2] * n + [1]))
    assert a.num_states == 3 and 3 not in a.allowed(walk(a, [0, 1])).tolist()
    b = C.compile(C.regex("x|a"), tok)  # complete with nothing after it: done, only EOS
    assert b.is_done(b.next(b.state0, 0)) and b.allowed(b.next(b.state0, 1)).tolist() == [3]
    with pytest.raises(C.ConstraintError, match="cannot be compiled"):
        C.compile(C.regex("xy"), tok)  # no token spells y
    assert C.regex("x$").regex == "x" and C.regex(r"x\$").regex == r"x\$"


def test_choice_with_a_prefix_and_digits(tiny):
    tok = tiny.tokenizer
    a = C.compile(C.choice(["alpha", "alphabet"]), tok)
    for text in ("alpha", "alphabet"):
        assert a.is_accepting(walk(a, tok.encode(text)))
    s = walk(a, [tok.token_id(c) for c in "alpha"])
    assert a.is_accepting(s) and a.next(s, tok.token_id("b")) >= 0
    d = C.compile(C.regex("[0-9]+"), tok)
    one = walk(d, [tok.token_id("1")])
    assert d.is_accepting(one) and not d.is_done(one)
    assert d.is_accepting(walk(d, [tok.token_id("1"), tok.token_id("2")]))
    assert d.is_accepting(walk(d, tok.encode("0123456789")))  # multi-digit tokens too
    assert d.next(d.state0, min(tiny.eos_ids)) == -1  # empty is not a number


def test_generation_reaches_both_choices(tiny):
    texts = {generate(tiny, C.choice(["alpha", "alphabet"]), 1.0, seed=s).text
             for s in range(12)}
    assert texts == {"alpha", "alphabet"}


def test_auto_with_a_strict_tool_can_call(tiny):
    a = C.compile(C.tool_call([READ], mode="auto"), tiny.tokenizer)
    tok = tiny.tokenizer
    call = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a", "lines": 12}}\n' + (
        "</tool_call>")
    for text in ("Let me check. ", "", "Sure <tool_ x "):
        assert a.is_accepting(walk(a, tok.encode(text)))
        assert a.is_done(walk(a, tok.encode(text + call)))
    p = C.compile(C.tool_call([READ, WEATHER], parallel=True), tok)
    s = walk(p, tok.encode(call))
    assert p.is_accepting(s) and not p.is_done(s)
    assert p.is_accepting(walk(p, tok.encode(call + "\n" + call + call)))


def test_automaton_language_is_the_regex():
    """Every token of a few automata is allowed exactly when the text with it is a prefix of
    a match (the `regex` module's partial matching), EOS exactly on a full match."""
    rx = pytest.importorskip("regex")
    vocab = ["a", "b", "x", "ab", "ba", "bx", "<", "<t", "t>", ">", "t", " "]
    tok = words(*vocab)
    eos = len(vocab)
    for c in (C.regex(r"x(?:ab)*"), C.choice(["a", "ab", "abab", "bx"]),
              C.regex(r"(?:a|ab)(?:b|ba)*x?"), C.regex(C._without("<t>"))):  # auto's text part
        a = C.compile(c, tok)
        todo, seen = [(a.state0, "")], {a.state0}
        while todo:
            s, text = todo.pop()
            assert a.is_allowed(s, eos) == bool(rx.fullmatch(c.regex, text)), (c, text)
            for t, w in enumerate(vocab):
                ok = bool(rx.fullmatch(c.regex, text + w, partial=True))
                assert a.is_allowed(s, t) == ok, (c.regex, text, w)
                n = a.next(s, t)
                if ok and n not in seen and len(text) < 12:
                    seen.add(n)
                    todo.append((n, text + w))


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
    (strict_obj({"x": {"type": "string", "pattern": 'a"b|a'}}), True, ["'pattern'", "escape"]),
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
    (lambda: C.regex("a$|b"), ["regex", "cannot be compiled"]),  # only a final $ is dropped
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


# ---- (f) forced tokens: speculative decoding drafts them for free ---------------------------

class Fixed:
    """A drafter that proposes the given tokens (or nothing) whatever the history."""

    needs_hidden = False

    def __init__(self, props: list[int] | None = None):
        self.props, self.drafted, self.accepted = props or [], 0, 0

    def propose(self, history, k):
        return self.props[:k]

    def observe(self, drafted, accepted):
        self.drafted, self.accepted = self.drafted + len(drafted), self.accepted + accepted


def test_drafts_take_the_forced_tokens(tiny):
    from agentfast.engine.backends.drafting import propose_drafts

    a = C.compile(C.json_schema(BY_NAME["get_weather"]["schema"]), tiny.tokenizer)
    forced = [s for s in range(a.num_states) if a.forced_token(s) >= 0 and not a.is_done(s)]
    assert forced, "the schema has forced states"
    s = forced[0]
    f = a.forced_token(s)
    run = [f]  # the forced run from s: every token the automaton forces, up to a free choice
    t = a.next(s, f)
    while a.forced_token(t) >= 0 and not a.is_done(t):
        run.append(a.forced_token(t))
        t = a.next(t, run[-1])
    wrong = next(x for x in range(a.vocab_size) if x != f)
    drafts = propose_drafts
    # a wrong guess is replaced, the drafter's rest dropped; forced tokens go past k
    assert drafts(Fixed([wrong, wrong]), [], 2, 100, a, s, frozenset()) == (run, 0)
    # a right guess counts as the drafter's
    assert drafts(Fixed([f]), [], 1, 100, a, s, frozenset()) == (run, 1)
    # room bounds the run; no automaton: the drafter's proposal cut at k, as before
    assert drafts(Fixed([]), [], 0, 1, a, s, frozenset()) == (run[:1], 0)
    assert drafts(Fixed([5, 6, 7]), [], 2, 100, None, 0, frozenset()) == ([5, 6], 2)


def test_forced_drafts_keep_greedy_output_and_save_steps(tiny, monkeypatch):
    """With a drafter that never guesses, the constraint's forced tokens alone are drafted:
    greedy output equals plain decode, with fewer forward passes; sampled output validates."""
    be = tiny.backend
    entry = BY_NAME["get_weather"]
    c = C.json_schema(bounded(entry["schema"]))
    auto = C.compile(c, tiny.tokenizer)
    ids = tiny.tokenizer.encode("JSON please")
    calls = []
    forward = be.model.forward
    monkeypatch.setattr(be.model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))

    def run(params, drafter=None):
        calls.clear()
        cache = be.new_cache()
        kw = {"drafter": drafter, "history": ids} if drafter is not None else {}
        out = list(be.decode(cache, be.prefill(cache, ids, 0), len(ids), params,
                             frozenset(auto.eos_ids), 200, automaton=auto, **kw))
        return out, len(calls)

    greedy = SamplingParams(temperature=0.0)
    plain, plain_calls = run(greedy)
    spec, spec_calls = run(greedy, Fixed())
    assert spec == plain and plain[-1] in auto.eos_ids
    assert spec_calls < plain_calls, (spec_calls, plain_calls)
    for seed in range(2):
        out, _ = run(SamplingParams(temperature=1.0, seed=seed), Fixed())
        assert out[-1] in auto.eos_ids
        validate(entry["schema"], tiny.tokenizer.decode(out[:-1]))
