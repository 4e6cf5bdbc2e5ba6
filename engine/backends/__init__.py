"""Backends: what runs the model's forward passes for one sequence.

One interface, several implementations (reference: PyTorch; graph: CUDA graph of Triton
kernels; monokernel: one persistent kernel). A backend owns device tensors (weights, KV caches)
and produces token ids; it knows nothing about text, sessions or stop strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ModelConfig
from ..sampling import SamplingParams

MAX_TOP_LOGPROBS = 20  # alternatives per token a backend must be able to report


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token with its log probability under the model's distribution at its position
    (log_softmax of the raw logits: before temperature, top-k/top-p and constraint masking) and
    the `top` most likely tokens of that distribution as (token id, logprob), best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprob(logits: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """`TokenLogprob` of `token` from one row of logits [V] (any device; one host copy)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    if not k:
        return TokenLogprob(token, float(lp[token]))
    v, i = torch.topk(lp, k)
    vals = torch.cat([lp[token:token + 1], v]).tolist()
    return TokenLogprob(token, vals[0], tuple(zip(i.tolist(), vals[1:], strict=True)))


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
    # Whether `decode` takes `logprobs=k` (per-token log probabilities from the logits the
    # decode step computed anyway: no extra forward).
    supports_logprobs: bool = False
    # Whether plain decoding (no drafter) runs ahead of the host: the device produces tokens
    # without the host driving each step, so a caller's per-token work does not slow it (an
    # agent may then iterate the generation on its event loop's thread: agent/direct.py).
    runs_ahead: bool = False

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
        token: a complete output ends with "stop", not "length").

        `logprobs` (an int k in 0..MAX_TOP_LOGPROBS, only passed when `supports_logprobs`):
        yield a `TokenLogprob` per token instead of the bare id: the token's logprob and the k
        most likely alternatives, from the logits the step already has. An EOS yielded without
        a forward pass (constraint done) carries logprob 0.0 and no alternatives."""

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
