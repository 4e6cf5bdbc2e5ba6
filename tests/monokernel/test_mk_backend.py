"""The monokernel backend through the engine: greedy equal to the reference, stops, sessions,
seeded sampling, cancellation; the CPU refusal without the interpreter."""

from __future__ import annotations

import pytest
import torch
from mk_utils import interpreted

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.errors import RequestError


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    from tiny_models import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("mk") / "qwen3", "qwen3", seed=3,
                           tie_word_embeddings=True, num_hidden_layers=1)


def _engines(folder):
    ref = Engine.load(str(folder), backend="reference", device="cpu", dtype=torch.float32,
                      max_context=64)
    mk = Engine.load(str(folder), backend="monokernel", device="cpu", dtype=torch.float32,
                     max_context=64)
    return ref, mk


@interpreted
def test_monokernel_backend_greedy_equals_reference(qwen3_dir):
    ref, mk = _engines(qwen3_dir)
    ids = ref.tokenizer.encode("The capital of France is Paris.")
    p = SamplingParams(max_tokens=8, ignore_eos=True)
    want = ref.generate(ids, p)
    got = mk.generate(ids, p)
    assert got.token_ids == want.token_ids and got.finish_reason == "length"
    # a session: the second turn reuses the first turn's K/V written by the kernel
    first = mk.generate(ids, p, session="s")
    turn2 = ids + first.token_ids[:4] + ids[:2]
    warm = mk.generate(turn2, p, session="s")
    assert warm.reused_tokens == len(ids) + 4
    assert warm.token_ids == ref.generate(turn2, p).token_ids
    stop = want.token_ids[3]
    r = mk.generate(ids, SamplingParams(max_tokens=8, stop_token_ids=(stop,), ignore_eos=True))
    assert r.token_ids == want.token_ids[: want.token_ids.index(stop)]
    assert r.finish_reason == "stop"


@interpreted
def test_monokernel_backend_sampling_and_cancel(qwen3_dir):
    _, mk = _engines(qwen3_dir)
    ids = mk.tokenizer.encode("Agents call tools")
    p = SamplingParams(max_tokens=6, temperature=0.9, top_k=8, seed=5, ignore_eos=True)
    a, b = mk.generate(ids, p), mk.generate(ids, p)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 6
    g = mk.stream(ids, SamplingParams(max_tokens=6, ignore_eos=True))
    next(iter(g))
    g.close()
    assert g.result is not None and g.result.finish_reason == "cancelled"
    with pytest.raises(RequestError, match="cap"):  # 100 > 64 candidates, < 320 tokens
        mk.generate(ids, SamplingParams(max_tokens=3, temperature=1.0, top_k=100))


def test_monokernel_backend_needs_cuda_or_the_interpreter(qwen3_dir, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the refusal is for CPU machines")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RequestError, match="CUDA"):
        Engine.load(str(qwen3_dir), backend="monokernel", device="cpu")


@interpreted
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_monokernel_logprobs_are_the_kernels_logits(qwen3_dir, temperature):
    """logprobs=k: each token scored on the logits row its own kernel step wrote (one step per
    launch), equal to log_softmax of the reference's logits; the tokens are those of a run
    without logprobs; with a constraint: a clear error naming logprobs."""
    from agentfast.engine import constraints as C

    ref, mk = _engines(qwen3_dir)
    ids = mk.tokenizer.encode("Agents call tools")
    p = SamplingParams(max_tokens=6, temperature=temperature, seed=7, ignore_eos=True)
    plain = mk.generate(ids, p)
    r = mk.generate(ids, p, logprobs=3)
    assert r.token_ids == plain.token_ids and len(r.logprobs) == 6
    cache = ref.backend.new_cache()
    want = torch.log_softmax(ref.backend.logits(cache, ids + r.token_ids[:-1], 0).float(), -1)
    want = want[len(ids) - 1:]
    for j, lp in enumerate(r.logprobs):
        assert lp.token_id == r.token_ids[j]
        assert lp.logprob == pytest.approx(float(want[j, lp.token_id]), abs=1e-4)
        best = torch.topk(want[j], 3)
        assert [v for _, v in lp.top] == pytest.approx(best.values.tolist(), abs=1e-4)
    with pytest.raises(RequestError, match="logprobs"):
        mk.generate(ids, SamplingParams(max_tokens=4, constraint=C.choice(["a", "b"])),
                    logprobs=2)


def _ngram(k_max: int = 3):
    from agentfast.spec_decode import DraftPolicy, NgramDrafter

    d = NgramDrafter()
    d.policy = DraftPolicy(k_max=k_max, k=k_max, adaptive=False)  # always k drafts
    return d


@interpreted
def test_monokernel_speculative_greedy_equals_plain(qwen3_dir):
    """A host drafter's proposals verified by the T = k + 1 kernel, one step per launch: the
    greedy output is the reference's plain greedy output, drafts get accepted on a repetitive
    prompt, and a constrained request stays equal too."""
    from agentfast.engine import constraints as C

    ref = Engine.load(str(qwen3_dir), backend="reference", device="cpu", dtype=torch.float32,
                      max_context=96)
    d = _ngram()
    mk = Engine.load(str(qwen3_dir), backend="monokernel", device="cpu", dtype=torch.float32,
                     max_context=96, drafter=d)
    ids = mk.tokenizer.encode("a b c d a b c d a b c d a b c")
    p = SamplingParams(max_tokens=12, ignore_eos=True)
    want = ref.generate(ids, p)
    got = mk.generate(ids, p)
    assert got.token_ids == want.token_ids and got.finish_reason == "length"
    assert got.draft_steps > 0 and got.draft_tokens > 0
    # the kernel kept what the target would have produced: accepted + 1 per verification step
    assert got.accepted_draft_tokens <= got.draft_tokens
    c = SamplingParams(max_tokens=12, constraint=C.regex(r"(ab|cd)+"))
    assert mk.generate(ids, c).token_ids == ref.generate(ids, c).token_ids


@interpreted
def test_monokernel_speculative_sampling_and_switch_off(qwen3_dir):
    """Sampling with drafts: reproducible by seed; a policy that finds no acceptance switches
    drafting off and the T = 1 kernel runs the plain steps (same output as without drafts
    under greedy); an MTP drafter (hidden states) on a cache made without them (the drafter
    set after the engine was built: keep_hidden off) is refused with a clear error."""
    from agentfast.spec_decode import Drafter, DraftPolicy, StepCost

    class Wrong(Drafter):  # always a token the model does not pick next
        def propose(self, history, k):
            return [(history[-1] + 7) % 251] * k

    d = Wrong()
    d.policy = DraftPolicy(k_max=3, k=3, probe_every=2, cost=StepCost({1: 1.0, 4: 2.0}))
    mk = Engine.load(str(qwen3_dir), backend="monokernel", device="cpu", dtype=torch.float32,
                     max_context=96, drafter=d)
    ref = Engine.load(str(qwen3_dir), backend="reference", device="cpu", dtype=torch.float32,
                      max_context=96)
    ids = mk.tokenizer.encode("Agents call tools and read files")
    p = SamplingParams(max_tokens=10, ignore_eos=True)
    assert mk.generate(ids, p).token_ids == ref.generate(ids, p).token_ids
    assert d.policy.switched_off >= 1
    s = SamplingParams(max_tokens=8, temperature=1.0, seed=11, ignore_eos=True)
    a, b = mk.generate(ids, s), mk.generate(ids, s)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 8

    class Hidden(Drafter):
        needs_hidden = True

        def propose(self, history, k):
            return []

    mk.drafter = Hidden()
    with pytest.raises(RequestError, match="MTP drafter"):
        mk.generate(ids, p)


@interpreted
def test_bench_greedy_check_through_the_verification_kernel(qwen3_dir):
    """agentfast bench --check-drafts: the monokernel decodes in T = 4 steps whose drafts are
    the fp32 oracle's greedy tokens (the host-drafter path); in fp32 every draft is kept and
    every token is the oracle's argmax."""
    from agentfast.engine.bench.run import greedy_check

    ref, mk = _engines(qwen3_dir)
    ids = ref.tokenizer.encode("The capital of France is Paris.")
    rec = greedy_check(ref.backend, mk.backend, ids, 9, drafts=3)
    assert rec["equal"] and rec["T"] == 4 and rec["verify_steps"] >= 2
    assert rec["accepted"] == rec["drafted"] > 0
