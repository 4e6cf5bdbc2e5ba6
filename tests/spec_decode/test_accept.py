"""Accept rules: greedy match, and a chi-square test that rejection sampling is lossless."""

from __future__ import annotations

import pytest
import torch

from agentfast.engine.sampling import SamplingParams, filtered_probs
from agentfast.spec_decode import accept_greedy, accept_sampled


def chisquare_pvalue(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square goodness-of-fit p-value (len - 1 degrees of freedom): the chi-square
    survival function as the regularized upper incomplete gamma Q(dof / 2, stat / 2)."""
    stat = ((observed - expected) ** 2 / expected).sum()
    dof = torch.tensor(float(observed.numel() - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(dof / 2, stat / 2))


def test_chisquare_pvalue_known_values():
    """Against tabulated chi-square quantiles: 3.841 at 1 degree of freedom and 11.070 at 5 are
    the 5% critical values, 15.086 at 5 the 1% one."""
    for stat, dof, p in [(3.841, 1, 0.05), (11.070, 5, 0.05), (15.086, 5, 0.01)]:
        # a sample whose statistic is `stat`: expected 1 everywhere, one cell off by sqrt(stat)
        exp = torch.ones(dof + 1, dtype=torch.float64)
        obs = exp.clone()
        obs[0] += stat ** 0.5
        assert abs(chisquare_pvalue(obs, exp) - p) < 2e-4, (stat, dof)


def test_greedy_keeps_only_the_argmax():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.9])
    assert accept_greedy(logits, 1) == (True, 1)
    assert accept_greedy(logits, 3) == (False, 1)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_k=5),
    SamplingParams(temperature=1.3, top_p=0.8),
])
@pytest.mark.parametrize("draft", [0, 5])  # a likely and an unlikely draft
def test_rejection_sampling_matches_target(params, draft):
    V, N = 8, 20_000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    p = filtered_probs(logits, params).double()
    gen = torch.Generator().manual_seed(1234)
    counts = torch.zeros(V, dtype=torch.float64)
    kept = 0
    for _ in range(N):
        ok, tok = accept_sampled(logits, draft, params, gen)
        assert (tok == draft) if ok else (tok != draft)  # a rejected draft is never resampled
        kept += ok
        counts[tok] += 1
    assert abs(kept / N - float(p[draft])) < 0.02  # accepted with probability p(d)
    support = p > 0
    assert counts[~support].sum() == 0  # never outside top-k / top-p
    expected = p[support] / p[support].sum() * N
    assert chisquare_pvalue(counts[support], expected) > 1e-3, (counts / N, p)


def test_rejected_draft_is_never_returned():
    logits = torch.tensor([0.0, 0.0, 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        ok, tok = accept_sampled(logits, 2, SamplingParams(temperature=1.0), gen)
        assert ok or tok != 2
