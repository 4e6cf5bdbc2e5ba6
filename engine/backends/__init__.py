"""Backends: what runs the model's forward passes for one sequence.

One interface, several implementations (reference: PyTorch; graph: CUDA graph of Triton
kernels; monokernel: one persistent kernel). A backend owns device tensors (weights, KV caches)
and produces token ids; it knows nothing about text, sessions or stop strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch

from ..config import ModelConfig
from ..sampling import SamplingParams


class Backend(ABC):
    name: str = ""
    cfg: ModelConfig
    device: torch.device
    dtype: torch.dtype
    max_len: int
    # Whether `decode` takes `automaton=` (structured outputs); the engine refuses a constrained
    # request on a backend without it rather than generate unconstrained.
    supports_constraints: bool = False
    # Whether `decode` takes `drafter=` and `history=` (speculative decoding, spec_decode/).
    supports_drafter: bool = False

    @abstractmethod
    def new_cache(self) -> Any:
        """Device state of one sequence (its KV cache)."""

    @abstractmethod
    def prefill(self, cache: Any, tokens: list[int], start: int) -> torch.Tensor:
        """Run `tokens` at positions start.. and return the last position's logits [V] float32."""

    @abstractmethod
    def decode(self, cache: Any, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int, automaton: Any = None) -> Iterator[int]:
        """Sample from `logits`, then keep decoding: yield each new token id. The token at
        position `start` is the first sampled one. Stops after a token in `stop_ids` (yielded)
        or `max_new` tokens; the caller may close the iterator early (cancellation).

        `automaton` (a `constraints.TokenAutomaton`, only passed when `supports_constraints`):
        before each sample, tokens the current state does not allow get logit -inf; after it,
        the state advances. Its EOS ids are in `stop_ids`; when the state allows only EOS, the
        backend yields an EOS id without running the model (also after the `max_new`-th
        token: a complete output ends with "stop", not "length")."""

    def logits(self, cache: Any, tokens: list[int], start: int) -> torch.Tensor:
        """Logits [T, V] float32 of every position of `tokens` (tests and oracles)."""
        raise NotImplementedError(f"{self.name} backend does not return all logits")


def create_backend(name: str, cfg: ModelConfig, weights: dict[str, torch.Tensor],
                   device: torch.device, dtype: torch.dtype, max_len: int) -> Backend:
    from ..errors import RequestError

    if name == "reference":
        from .reference import ReferenceBackend

        return ReferenceBackend(cfg, weights, device, dtype, max_len)
    if name == "graph":
        from .graph import GraphBackend

        return GraphBackend(cfg, weights, device, dtype, max_len)
    if name == "monokernel":
        from .monokernel import MonokernelBackend

        return MonokernelBackend(cfg, weights, device, dtype, max_len)
    raise RequestError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")


BACKENDS = ("reference", "graph", "monokernel")
