"""The draft-model drafter: greedy output equals plain decode token for token (a separate tiny
draft model, early-exit models cut from the target, the embedded model), the target as its own
draft model is accepted (nearly) always, its KV cache follows the sequence by feeding only new
tokens and rolling back by length, a vocabulary mismatch is a clear error."""

from __future__ import annotations

import pytest
from tiny_models import make_checkpoint

from agentfast.engine import Engine, SamplingParams
from agentfast.engine import constraints as C
from agentfast.engine.errors import ModelLoadError, RequestError
from agentfast.spec_decode import DraftModelDrafter, DraftPolicy
from agentfast.spec_decode.draft_model import forward_params

PROMPTS = ["The quick brown fox jumps over the lazy dog.",
           "def add(a, b):\n    return a + b\n\ndef add(",
           "{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.py\"}}",
           "Paris"]
GREEDY = SamplingParams(temperature=0.0)


def decode(eng: Engine, text: str, max_new: int, drafter=None, params=GREEDY,
           automaton=None, stop_ids=frozenset()) -> list[int]:
    be = eng.backend
    ids = eng.tokenizer.encode(text)
    cache = be.new_cache()
    logits = be.prefill(cache, ids, 0)
    kw = {} if drafter is None else {"drafter": drafter, "history": ids}
    if automaton is not None:
        kw["automaton"] = automaton
    return list(be.decode(cache, logits, len(ids), params, stop_ids, max_new, **kw))


def fixed(d: DraftModelDrafter, k: int = 4) -> DraftModelDrafter:
    d.policy = DraftPolicy(k=k, k_max=k, adaptive=False)  # always k drafts: measure acceptance
    return d


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory):
    """A smaller random Llama with the tiny models' tokenizer (1 layer, hidden 32)."""
    return make_checkpoint(tmp_path_factory.mktemp("draft") / "d", "llama", seed=11,
                           num_hidden_layers=1, hidden_size=32, intermediate_size=48,
                           num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope="module")
def with_draft(llama_dir, draft_dir):
    eng = Engine.load(str(llama_dir), device="cpu", drafter=f"draft:{draft_dir}")
    fixed(eng.drafter)  # a random draft model is rarely right: keep drafting regardless
    return eng


@pytest.mark.parametrize("text", PROMPTS)
@pytest.mark.parametrize("max_new", [1, 2, 33])
def test_greedy_with_draft_model_equals_plain(tiny, with_draft, text, max_new):
    assert decode(with_draft, text, max_new, with_draft.drafter) == decode(tiny, text, max_new)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("text", PROMPTS[:2])
def test_greedy_with_early_exit_equals_plain(tiny, layers, text):
    w = tiny.backend.model.w
    d = DraftModelDrafter.early_exit(tiny.config, w, layers, tiny.max_context)
    assert d.model.w.layers[0] is w.layers[0]  # the target's tensors, not a copy
    assert decode(tiny, text, 30, d) == decode(tiny, text, 30)


def test_target_as_its_own_draft_model_is_accepted(tiny, llama_dir):
    # early exit after every layer = the target itself
    w = tiny.backend.model.w
    full = fixed(DraftModelDrafter.early_exit(tiny.config, w, tiny.config.num_layers,
                                              tiny.max_context))
    # and the same checkpoint loaded again as a separate draft model
    same = Engine.load(str(llama_dir), device="cpu", drafter=f"draft:{llama_dir}")
    fixed(same.drafter)
    for text in PROMPTS:
        want = decode(tiny, text, 40)
        assert decode(tiny, text, 40, full) == want
        assert decode(same, text, 40, same.drafter) == want
    for d in (full, same.drafter):
        assert d.drafted > 50 and d.accepted >= 0.95 * d.drafted, (d.drafted, d.accepted)
    assert full.draft_cost == pytest.approx(1.0)


def test_vocabulary_mismatch_is_an_error(llama_dir, tmp_path):
    other = make_checkpoint(tmp_path / "v", "llama", seed=2, vocab_size=400)
    with pytest.raises(ModelLoadError, match="vocabulary has 400 tokens, the target's 320"):
        Engine.load(str(llama_dir), device="cpu", drafter=f"draft:{other}")


def test_bad_specs(llama_dir):
    for spec in ("early:99", "early:x", "draft:"):
        with pytest.raises(RequestError):
            Engine.load(str(llama_dir), device="cpu", drafter=spec)


def test_kv_follows_the_sequence(tiny, draft_dir):
    d = DraftModelDrafter.load(str(draft_dir), tiny.config, "cpu", tiny.dtype, tiny.max_context,
                               tiny.tokenizer)
    ids = tiny.tokenizer.encode(PROMPTS[1])
    a = d.propose(ids, 3)
    assert len(a) == 3 and d.fed == len(ids) + 2  # the history once, then one per draft
    # Two drafts accepted, a different bonus token: feeds only that token, then drafts on.
    bonus = (a[2] + 1) % tiny.config.vocab_size
    hist = ids + a[:2] + [bonus]
    fed = d.fed
    b = d.propose(hist, 3)
    assert d.fed - fed == 1 + 2
    fresh = DraftModelDrafter.load(str(draft_dir), tiny.config, "cpu", tiny.dtype,
                                   tiny.max_context)
    assert b == fresh.propose(hist, 3)  # rolled back by length: same as from scratch
    # All three accepted plus a bonus: feeds the last draft and the bonus.
    hist2 = hist + b + [5]
    fed = d.fed
    c = d.propose(hist2, 2)
    assert d.fed - fed == 2 + 1 and c == fresh.propose(hist2, 2)
    # Rewound to an earlier point (a session whose prompt changed): recomputes from there.
    assert d.propose(ids[:4], 2) == fresh.propose(ids[:4], 2)


def test_no_reprefill_per_step(tiny, with_draft):
    d = with_draft.drafter
    fed0, steps0, text = d.fed, d.steps, PROMPTS[0]
    n = len(with_draft.tokenizer.encode(text))
    decode(with_draft, text, 40, d)
    # The prompt once, then per step the new tokens (at most 2) and k - 1 drafts (k = 4).
    assert d.steps - steps0 >= 8 and d.fed - fed0 <= n + (d.steps - steps0) * 5


def test_sessions_and_constraints(tiny, with_draft):
    p = SamplingParams(max_tokens=20, temperature=0.0)
    msgs = [{"role": "user", "content": "Agents call tools, read files"}]
    for _ in range(3):  # the session's K/V and the draft model's own cache are reused
        r = with_draft.chat(msgs, p, session="s")
        assert r.token_ids == tiny.chat(msgs, p).token_ids
        msgs += [{"role": "assistant", "content": r.text}, {"role": "user", "content": "and?"}]
    assert r.reused_tokens > 0
    auto = tiny._automaton(SamplingParams(constraint=C.regex(r"(abc ){2,12}\.")))
    eos = frozenset(auto.eos_ids)
    assert (decode(with_draft, PROMPTS[0], 40, with_draft.drafter, automaton=auto, stop_ids=eos)
            == decode(tiny, PROMPTS[0], 40, automaton=auto, stop_ids=eos))


def test_sampling_is_reproducible(with_draft):
    p = SamplingParams(temperature=0.8, top_p=0.9, seed=3)
    a = decode(with_draft, PROMPTS[1], 30, with_draft.drafter, p)
    assert a == decode(with_draft, PROMPTS[1], 30, with_draft.drafter, p) and len(a) == 30


def test_draft_cost_by_weights(tiny, with_draft):
    assert 0 < with_draft.drafter.draft_cost < 0.5
    w = tiny.backend.model.w
    d = DraftModelDrafter.early_exit(tiny.config, w, 1, tiny.max_context)
    assert d.draft_cost == pytest.approx(
        forward_params(d.model.cfg) / forward_params(tiny.config))


# ---- the embedded model ---------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["early:30", "early:20"])
def test_embedded_early_exit_equals_plain(smol, spec):
    eng = Engine(smol.model, device="cpu", drafter=spec)
    fixed(eng.drafter, 3)
    for text in ["def fib(n):\n    if n < 2:\n        return n\n    return", "The capital of"]:
        assert decode(eng, text, 16, eng.drafter) == decode(smol, text, 16)
    d = eng.drafter
    if spec == "early:30":  # the target itself
        assert d.accepted >= 0.95 * d.drafted, (d.drafted, d.accepted)
