"""Accept rules: is a drafted token kept, and if not, which token replaces it.

Works on one row of float32 logits (the target's, already masked by any constraint) and one
drafted token id. Drafters here are deterministic: the draft distribution q is one-hot at the
draft d, which is what makes the sampling rule below so short.
"""

from __future__ import annotations

import torch

from agentfast.engine.sampling import SamplingParams, filtered_probs


def accept_greedy(logits: torch.Tensor, draft: int) -> tuple[bool, int]:
    """logits [V] -> (kept, token). Kept iff the draft is the target's argmax; either way
    `token` is the argmax, so the output equals plain greedy decode token for token."""
    tok = int(torch.argmax(logits))
    return tok == draft, tok


def accept_sampled(logits: torch.Tensor, draft: int, params: SamplingParams,
                   gen: torch.Generator | None) -> tuple[bool, int]:
    """logits [V] -> (kept, token), lossless speculative rejection sampling.

    Target p = filtered_probs (temperature, top-k, top-p); draft q = one-hot at d.
    Accept d with probability min(1, p(d) / q(d)) = p(d); on rejection sample from the residual
    max(p - q, 0) / Z, which for a one-hot q is p with d removed, renormalized. Then
    P(out = d) = p(d) and P(out = x != d) = (1 - p(d)) * p(x) / (1 - p(d)) = p(x): exactly p."""
    p = filtered_probs(logits, params)  # [V]
    pd = float(p[draft])
    u = float(torch.rand((), generator=gen, device=p.device))
    if u < pd:  # u ~ U[0, 1): accept with probability p(d)
        return True, draft
    residual = p.clone()
    residual[draft] = 0.0  # (p - q)+ with q one-hot at d; pd < 1 here since u < 1
    if not float(residual.sum()) > 0:  # p(d) rounded below 1 with no other mass: keep d
        return True, draft
    tok = int(torch.multinomial(residual / residual.sum(), 1, generator=gen)[0])
    return False, tok


def verify(logits: torch.Tensor, draft: int, params: SamplingParams,
           gen: torch.Generator | None) -> tuple[bool, int]:
    """The rule the sampling parameters call for: greedy match or rejection sampling."""
    if params.greedy:
        return accept_greedy(logits, draft)
    return accept_sampled(logits, draft, params, gen)
