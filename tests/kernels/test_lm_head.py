from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    DEVICE,
    DTYPES,
    assert_close,
    interpreted,
    rand_weight,
    randn,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import lm_head as lh

V = 1000

pytestmark = interpreted


def params(t: float, k: int, p: float, seed: int = 1234, offset: int = 0):
    f32 = dict(dtype=torch.float32, device=DEVICE)
    return dict(
        temperature=torch.tensor([t], **f32),
        top_k=torch.tensor([k], dtype=torch.int32, device=DEVICE),
        top_p=torch.tensor([p], **f32),
        seed=torch.tensor([seed], dtype=torch.int64, device=DEVICE),
        offset=torch.tensor([offset], dtype=torch.int64, device=DEVICE),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [64, 96])
def test_lm_head_and_greedy(K, dtype):
    x, nw, w = randn(K, dtype=dtype), rand_weight(K, dtype=dtype), randn(V, K, dtype=dtype)
    logits = lh.lm_head(x, nw, w, 1e-6)
    assert logits.dtype == torch.float32
    assert_close(logits, lh.lm_head_ref(x, nw, w, 1e-6), dtype)
    tok, logits2 = torch.empty(1, dtype=torch.int32, device=DEVICE), torch.empty_like(logits)
    assert lh.lm_head_argmax(x, nw, w, 1e-6, out=tok, logits=logits2) is tok
    assert int(tok) == int(logits2.argmax())  # exact on what the kernel computed
    assert int(tok) == int(lh.lm_head_argmax_ref(x, nw, w, 1e-6))


@pytest.mark.parametrize("n,block", [(1, 4096), (1000, 4096), (1000, 128), (5000, 256)])
def test_argmax_ties_and_blocks(n, block):
    logits = randn(n) - 10.0  # all negative
    if n > 600:
        logits[517] = logits[n - 3] = 7.0  # a tie across blocks: the first index wins
    out = lh.argmax(logits, block=block)
    assert int(out) == int(lh.argmax_ref(logits))


@pytest.mark.parametrize("t,k,p", [
    (0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 50, 0.9), (1.3, 0, 0.5), (1.0, 1, 1.0), (2.0, 5, 0.99),
    (1.0, 2000, 0.3),
])
def test_sample_matches_ref(t, k, p):
    logits = randn(V, scale=3.0)
    for seed in (1, 77):
        a, b = params(t, k, p, seed, seed * 5), params(t, k, p, seed, seed * 5)
        tok = lh.sample(logits, **a)
        assert int(tok) == int(lh.sample_ref(logits, **b))
        assert int(a["offset"]) == int(b["offset"]) == seed * 5 + 1  # the kernel advanced it


def test_sample_greedy_is_argmax():
    logits = randn(V, scale=3.0)
    want = int(logits.argmax())
    assert int(lh.sample(logits, **params(0.0, 0, 0.9))) == want
    assert int(lh.sample(logits, **params(1.0, 1, 1.0))) == want


def test_sample_max_candidates():
    logits = randn(V, scale=2.0)
    for seed in (3, 4):
        tok = lh.sample(logits, **params(1.0, 0, 0.95, seed), max_candidates=64)
        ref = lh.sample_ref(logits, **params(1.0, 0, 0.95, seed), max_candidates=64)
        assert int(tok) == int(ref)


def test_sample_distribution():
    """Frequencies follow the temperature/top-p distribution; excluded tokens never appear."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], device=DEVICE)
    prm = params(1.0, 0, 0.9, seed=42)
    probs = torch.softmax(logits, 0)
    keep = (torch.cumsum(probs, 0) - probs) < 0.9  # logits are already sorted
    want = torch.where(keep, probs, 0.0)
    want = want / want.sum()
    n = 250
    counts = torch.zeros(6)
    out = torch.empty(1, dtype=torch.int32, device=DEVICE)
    for _ in range(n):
        counts[int(lh.sample(logits, **prm, out=out))] += 1
    assert int(prm["offset"]) == n
    assert counts[~keep.cpu()].sum() == 0
    assert (counts / n - want.cpu()).abs().max() < 0.08, (counts / n, want)


def test_philox_matches_tl_rand():
    """philox_uniform is what the kernel draws: checked through a top-p=1 draw on two tokens."""
    logits = torch.tensor([0.0, 0.0], device=DEVICE)  # p = 0.5 each: token = u > 0.5
    for off in range(6):
        tok = lh.sample(logits, **params(1.0, 0, 1.0, seed=9, offset=off))
        assert int(tok) == int(lh.philox_uniform(9, off) >= 0.5)
