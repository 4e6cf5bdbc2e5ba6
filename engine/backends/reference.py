"""The reference backend: the PyTorch transformer and the PyTorch sampler, step by step.

Runs on CPU or CUDA; one host round trip per token (it is the oracle, not the fast path).
Constraints are applied with tensor ops (the state's bitmask row), the state advanced on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from ..model import KVCache, Transformer, build_weights
from ..sampling import SamplingParams, make_generator, sample
from . import Backend

if TYPE_CHECKING:
    from ..constraints import TokenAutomaton


class ReferenceBackend(Backend):
    name = "reference"
    supports_constraints = True

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_len: int):
        self.cfg, self.device, self.dtype, self.max_len = cfg, device, dtype, max_len
        if device.type == "cpu":
            # Dequantized GGUF weights produce denormal activations; x86 handles them ~10x
            # slower (measured: 4 -> 28 tok/s on the embedded model). Flushing them to zero
            # is process-wide and changes results only below 1e-38.
            torch.set_flush_denormal(True)
        self.model = Transformer(cfg, build_weights(cfg, weights, device, dtype), max_len)

    def new_cache(self) -> KVCache:
        return self.model.new_cache()

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.int64, device=self.device)

    def prefill(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache, last_only=True)[0]

    def logits(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache)

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int,
               automaton: TokenAutomaton | None = None) -> Iterator[int]:
        gen = None if params.greedy else make_generator(params.seed, self.device)
        masks = automaton.to(logits.device) if automaton is not None else None
        state = automaton.state0 if automaton is not None else 0
        pos = start
        for i in range(max_new):
            if masks is not None:
                logits = masks.mask_logits(logits, state)  # disallowed tokens -> -inf
            tok = int(sample(logits, params, gen))
            yield tok
            if tok in stop_ids:
                return
            if automaton is not None:
                state = automaton.next(state, tok)
                assert state >= 0, f"token {tok} is not allowed by the constraint"
                if automaton.is_done(state):  # only EOS is left: no forward pass needed
                    yield automaton.eos_ids[0]
                    return
            if i == max_new - 1:
                return
            logits = self.model.forward(self._ids([tok]), pos, cache, last_only=True)[0]
            pos += 1
