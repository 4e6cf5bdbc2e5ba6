"""Sampling parameters and the reference sampler (greedy, temperature, top-k, top-p, seed).

Works on one row of float32 logits on any device; the random draw comes from a torch.Generator
on that device, seeded per request, so a seed reproduces a sample exactly. Knows nothing about
tokenizers: stop strings are matched on text by the generation loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import RequestError

if TYPE_CHECKING:
    from .constraints import Constraint


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings, matched on the generated text
    stop_token_ids: tuple[int, ...] = ()  # in addition to the model's EOS ids
    ignore_eos: bool = False
    # Structured output (JSON Schema, regex, choice, tool call): disallowed tokens are masked
    # before sampling and EOS is allowed only where the output is complete. Compared by spec.
    constraint: Constraint | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.temperature >= 0:
            raise RequestError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise RequestError("stop strings must not be empty")
        if self.constraint is not None:
            from .constraints import Constraint

            if not isinstance(self.constraint, Constraint):
                raise RequestError("constraint must be made by agentfast.engine.constraints "
                                   f"(json_schema, regex, ...), not {type(self.constraint)}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def filtered_probs(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """logits [V] float32 -> probabilities [V] after temperature, top-k and top-p."""
    x = logits.float() / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if p.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        drop = cum - sorted_p >= p.top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
        probs = probs / probs.sum()
    return probs


def sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> torch.Tensor:
    """One token id (0-dim int64 tensor on the logits' device) from logits [V]."""
    if p.greedy:
        return torch.argmax(logits)
    probs = filtered_probs(logits, p)
    return torch.multinomial(probs, 1, generator=gen)[0]


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g
