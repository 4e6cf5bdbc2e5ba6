"""The VM (torch) against the reference transformer, across plans, ranks and sampling rules."""

from __future__ import annotations

import pytest
import torch
from mk_utils import FAST, NAMES, PROMPT, V, harness

from agentfast.engine.errors import RequestError
from agentfast.engine.sampling import SamplingParams, filtered_probs
from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import reference_divergence
from agentfast.kernels.monokernel.plan import Tiling
from agentfast.kernels.monokernel.sampling import (
    MIN_KEY,
    choose,
    make_keys,
    sampling_mode,
    split_keys,
)
from agentfast.kernels.monokernel.vm import VM

N = 10
WIDE = Tiling(bn=64, bn_lm=64, attn_splits=2, attn_block=16, cand=64)  # top-p needs room


@pytest.mark.parametrize("name", NAMES)
def test_vm_greedy_equals_reference(name):
    h = harness(name)
    ref, ref_logits = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N)
    vm, logits = h.vm(), []
    for _ in range(N - 1):
        vm.run(1)
        logits.append(h.bufs.logits[0].clone())
    assert h.tokens() == ref
    assert int(h.bufs.state[W.DONE]) == W.DONE_LENGTH
    err = (torch.stack(logits) - ref_logits[1:]).abs().max().item()
    assert err < 1e-4 * max(1.0, ref_logits.abs().max().item()), err
    assert reference_divergence(harness(name), PROMPT, 4) is None


@pytest.mark.parametrize("name", ["llama_gqa_tied_hd64", "qwen3_qknorm_hd128",
                                  "mistral_window_hd64"])
@pytest.mark.parametrize("drafts", ["perfect", "every_third_wrong", "none"])
def test_vm_T4_with_drafts_equals_reference(name, drafts):
    h = harness(name, T=4)
    ref, _ = h.reference_greedy(PROMPT, N)
    d = {"perfect": ref, "none": [],
         "every_third_wrong": [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)]}
    h.start(PROMPT, N, drafts=d[drafts])
    steps = h.vm().run(N)
    assert h.tokens() == ref
    if drafts == "perfect":
        assert steps == 3  # 1 + 4 + 4 + 1 tokens
    assert steps <= N - 1  # with no drafts the last token is repeated: accepted when it recurs


@pytest.mark.parametrize("name", ["llama_obias_hd64", "qwen2_bias_hd64"])
def test_two_ranks_equal_one(name):
    one, two = harness(name), harness(name, ranks=2)
    one.start(PROMPT, N)
    two.start(PROMPT, N)
    b1 = two.bufs.clone()
    vm1, vm2 = one.vm(), VM(two.plan, two.w, [two.bufs, b1])
    for _ in range(N - 1):
        vm1.run(1)
        vm2.run(1)
        for b in (two.bufs, b1):
            assert torch.allclose(b.logits, one.bufs.logits, atol=1e-4)
            assert torch.allclose(b.x, one.bufs.x, atol=1e-5)
    assert one.tokens() == two.tokens() == two.tokens(b1)
    kvh = one.cfg.num_kv_heads // 2
    for r, b in enumerate((two.bufs, b1)):
        heads = slice(r * kvh, (r + 1) * kvh)
        assert torch.allclose(b.k_cache[:, heads], one.bufs.k_cache[:, heads], atol=1e-5)


@pytest.mark.parametrize("params", [dict(temperature=0.8), dict(temperature=1.0, top_k=5),
                                    dict(temperature=0.5, top_p=0.8),
                                    dict(temperature=0.7, top_k=12, top_p=0.9)])
def test_sampling_is_keyed_by_position(params):
    """Gumbel noise keyed by (seed, position): speculative steps (T = 4) sample exactly the
    tokens plain steps (T = 1) sample, whatever the drafts."""
    one = harness("llama_gqa_tied_hd64", tiling=WIDE)
    one.start(PROMPT, N, seed=7, **params)
    one.vm().run(N)
    toks = one.tokens()
    assert len(toks) == N and int(one.bufs.err[0]) == 0
    for drafts in (toks, toks[:3] + [0] * 10):
        four = harness("llama_gqa_tied_hd64", T=4, tiling=WIDE)
        four.start(PROMPT, N, seed=7, drafts=drafts, **params)
        four.vm().run(N)
        assert four.tokens() == toks
    other = harness("llama_gqa_tied_hd64", tiling=WIDE)
    other.start(PROMPT, N, seed=8, **params)
    other.vm().run(N)
    assert other.tokens() != toks


@pytest.mark.parametrize("k,p", [(5, 1.0), (0, 0.7), (8, 0.6), (3, 0.95)])
def test_filtered_sampling_distribution(k, p):
    """Gumbel-max over the kept set draws from engine.sampling.filtered_probs exactly."""
    torch.manual_seed(1)
    logits = torch.randn(40) * 2
    logits[7] = logits[8]  # a tie
    want = filtered_probs(logits, SamplingParams(temperature=0.9, top_k=k, top_p=p))
    mode, kk = sampling_mode(0.9, k, p, 40, 16)
    counts = torch.zeros(40)
    for key in range(3000):
        tok, over = choose(logits, mode, 0.9, kk, p, 1000 + key, 16)
        assert not over
        counts[tok] += 1
    assert torch.all(counts[want == 0] == 0), "a token outside the kept set was drawn"
    assert (counts / 3000 - want).abs().max() < 0.03


def test_candidate_cap_is_an_error_never_an_approximation():
    flat = torch.zeros(V)  # every token equally likely: a 0.9 nucleus holds 231 tokens
    mode, k = sampling_mode(1.0, 0, 0.9, V, 16)
    assert choose(flat, mode, 1.0, k, 0.9, 0, 16)[1] is True
    with pytest.raises(RequestError, match="cap"):
        sampling_mode(1.0, 40, 1.0, V, 16)
    assert sampling_mode(1.0, 1, 0.5, V, 16)[0] == W.GREEDY
    assert sampling_mode(1.0, V, 1.0, V, 16)[0] == W.TEMPERATURE  # top_k >= V: off
    h = harness("llama_gqa_tied_hd64", tiling=Tiling(bn=64, bn_lm=64, cand=16))
    with torch.no_grad():  # a model whose logits are flat: the kernel's check must fire
        h.w.lm_head.zero_()
    W.start_sequence(h.bufs, h.w, token=1, pos=0, max_new=N, stop_ids=[], capacity=48,
                     mode=W.FILTERED, temperature=1.0, top_k=0, top_p=0.9, seed=1)
    h.vm().run(3)
    assert int(h.bufs.err[0]) == W.ERR_CAP and int(h.bufs.state[W.DONE]) == W.DONE_ERROR


def test_keys_roundtrip_and_order():
    vals = torch.tensor([1.5, -0.0, 0.0, -2.25, float("-inf"), 3e38, -1e-30])
    ids = torch.arange(7)
    keys = make_keys(vals, ids)
    v, i = split_keys(keys)
    assert torch.equal(v, vals) and torch.equal(i, ids)
    order = torch.sort(keys, descending=True).indices
    assert order.tolist() == [5, 0, 1, 2, 6, 3, 4] or order.tolist() == [5, 0, 2, 1, 6, 3, 4]
    assert int(keys.min()) > MIN_KEY
    assert FAST.cand == 16


def test_vm_stops_after_a_layer():
    h = harness("llama_gqa_tied_hd64")
    h.start(PROMPT, N)
    x0 = h.bufs.x.clone()
    vm = h.vm()
    vm.run(1, stop_after_layer=0)
    bufs = vm.buffers()
    assert not torch.equal(bufs["x"], x0)  # layer 0 added its attention and MLP
    assert int(bufs["state"][W.STEPS]) == 0 and int(bufs["host"][W.H_PROGRESS]) == 1
    last = h.plan.last_seq_of_layer(0)
    assert h.plan.ops[last].name.startswith("layer 0 DOWN")
    assert int(bufs["ctr"][last]) == h.plan.ops[last].tiles
    assert int(bufs["ctr"][last + 1]) == 0  # layer 1 never ran
