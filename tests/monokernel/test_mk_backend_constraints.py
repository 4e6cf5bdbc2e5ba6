"""Structured outputs through the monokernel backend (CPU interpreter, one program): greedy
output equal to the reference backend's token for token, sampled output valid, the ends of an
output (EOS chosen, EOS written after a state that allows only it, the token limit)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from mk_utils import interpreted

from agentfast.engine import Engine, SamplingParams
from agentfast.engine import constraints as C

SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                           "ok": {"type": "boolean"}},
          "required": ["color", "ok"], "additionalProperties": False}
CASES = {
    "choice": (C.choice(["yes", "no", "maybe later"]), lambda t: t in ("yes", "no", "maybe later")),
    "regex": (C.regex(r"[0-9]{3}-[a-z]{2,4}"),
              lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t) is not None),
    "schema": (C.json_schema(SCHEMA), lambda t: jsonschema.validate(json.loads(t), SCHEMA) is None),
}
PROMPT = "<|im_start|>user\nJSON please<|im_end|>\n"


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def engines(request, tmp_path_factory):
    from tiny_models import make_checkpoint

    arch = request.param
    folder = make_checkpoint(tmp_path_factory.mktemp("mkc") / arch, arch, seed=7,
                             tie_word_embeddings=arch == "qwen3", num_hidden_layers=1)
    kw = dict(device="cpu", dtype=torch.float32, max_context=96)
    return (Engine.load(str(folder), backend="reference", **kw),
            Engine.load(str(folder), backend="monokernel", **kw))


def _params(c, temperature=0.0, seed=0, max_tokens=60):
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                          constraint=c)


@interpreted
@pytest.mark.parametrize("case", list(CASES))
def test_constrained_greedy_equals_reference(engines, case):
    ref, mk = engines
    c, valid = CASES[case]
    want = ref.generate(PROMPT, _params(c))
    got = mk.generate(PROMPT, _params(c))
    assert got.token_ids == want.token_ids, (got.text, want.text)
    assert got.finish_reason == want.finish_reason == "stop" and got.stop == want.stop
    assert valid(got.text), got.text


@interpreted
def test_constrained_sampling_is_valid(engines):
    _, mk = engines
    for case, (c, valid) in CASES.items():
        for seed in range(1 if case == "schema" else 2):  # (the schema: ~30 steps)
            r = mk.generate(PROMPT, _params(c, temperature=1.0, seed=seed))
            assert r.finish_reason == "stop" and valid(r.text), (case, seed, r.text)
    # filtered sampling (top-k, top-p) over the masked candidates
    c, valid = CASES["regex"]
    p = SamplingParams(max_tokens=60, temperature=0.8, top_k=20, top_p=0.95, seed=1,
                       constraint=c)
    r = mk.generate(PROMPT, p)
    assert r.finish_reason == "stop" and valid(r.text), r.text
    assert mk.generate(PROMPT, p).token_ids == r.token_ids  # seeded: the same tokens


@interpreted
def test_limits_and_unconstrained_after_constrained(engines):
    ref, mk = engines
    c = C.regex(r"abc abc abc")
    full = mk.generate(PROMPT, _params(c))
    n = len(full.token_ids)
    assert full.text == "abc abc abc" and full.finish_reason == "stop" and n > 2
    exact = mk.generate(PROMPT, _params(c, max_tokens=n))  # complete at the limit: "stop"
    assert exact.finish_reason == "stop" and exact.token_ids == full.token_ids
    cut = mk.generate(PROMPT, _params(c, max_tokens=2))
    assert cut.finish_reason == "length" and cut.token_ids == full.token_ids[:2]
    p = SamplingParams(max_tokens=6, ignore_eos=True)  # the tables are gone again
    assert mk.generate(PROMPT, p).token_ids == ref.generate(PROMPT, p).token_ids


@interpreted
def test_gpu_bench_times_the_monokernel(engines):
    """gpu_bench's monokernel timing on the CPU interpreter: launches chained in one context,
    the automaton restarted on the device after each complete choice, checked on the host."""
    from agentfast.engine.constraints import gpu_bench as gb

    _, mk = engines
    be, a = mk.backend, C.compile(C.choice(["yes", "no"]), mk.tokenizer, tuple(mk.eos_ids))
    prompt = mk.tokenizer.encode(PROMPT)
    r = gb.time_monokernel(be, be.new_cache(), prompt, 7, 2, 0.0, a, launches=2)
    assert r["launches"] == 2 and r["steps"] == 7 and r["mean_ms"] > 0 and r["resets"] >= 2
    text = mk.tokenizer.decode(r["sample_ids"])
    assert re.fullmatch(r"(es|s|o)?(yes|no)*(y|ye|n)?", text), text  # choices, restarted
    u = gb.time_monokernel(be, be.new_cache(), prompt, 3, 1, 0.0, None, launches=1)
    assert u["launches"] == 1 and "resets" not in u
