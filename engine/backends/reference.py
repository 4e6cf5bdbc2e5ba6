"""The reference backend: the PyTorch transformer and the PyTorch sampler, step by step.

Runs on CPU or CUDA; one host round trip per token (it is the oracle, not the fast path).
Constraints are applied with tensor ops (the state's bitmask row), the state advanced on the host.
With a drafter (agentfast.spec_decode), each step scores the last token plus k drafts in one
forward and keeps the accepted prefix; rejected positions' K/V are overwritten later.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from ..model import KVCache, Transformer, build_weights
from ..sampling import SamplingParams, make_generator, sample
from .prefill import ReferencePrefill

if TYPE_CHECKING:
    from agentfast.spec_decode import Drafter

    from ..constraints import TokenAutomaton


class ReferenceBackend(ReferencePrefill):
    name = "reference"
    supports_constraints = True
    supports_drafter = True  # decode takes drafter= (agentfast.spec_decode)

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
        return self.model.new_cache()  # grows with the sequence (no fixed addresses needed)

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int,
               automaton: TokenAutomaton | None = None, drafter: Drafter | None = None,
               history: list[int] | None = None) -> Iterator[int]:
        """Backend.decode; with `drafter`, speculative (same greedy output, same sampling
        distribution). `history`: the tokens before `start` (the prompt), for the drafter."""
        if drafter is not None:
            yield from self._decode_spec(cache, logits, start, params, stop_ids, max_new,
                                         automaton, drafter, list(history or []))
            return
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
                state = automaton.advance(state, tok)
                if automaton.is_done(state):  # only EOS is left: no forward pass needed
                    yield automaton.eos_ids[0]
                    return
            if i == max_new - 1:
                return
            logits = self.model.forward(self._ids([tok]), pos, cache, last_only=True)[0]
            pos += 1

    def _decode_spec(self, cache: KVCache, logits: torch.Tensor, start: int,
                     params: SamplingParams, stop_ids: frozenset[int], max_new: int,
                     automaton: TokenAutomaton | None, drafter: Drafter,
                     hist: list[int]) -> Iterator[int]:
        from agentfast.spec_decode import DraftLength, verify

        gen = None if params.greedy else make_generator(params.seed, self.device)
        masks = automaton.to(logits.device) if automaton is not None else None
        state = automaton.state0 if automaton is not None else 0
        length = DraftLength()
        pos, n = start, 0  # pos: position of the next token to yield; n: tokens yielded
        rows, drafts = logits[None], []  # rows[i]: distribution at pos+i; drafts[i]: its guess
        while True:
            accepted = 0
            for i, row in enumerate(rows):
                if masks is not None:
                    row = masks.mask_logits(row, state)  # disallowed tokens -> -inf
                if i < len(drafts):
                    kept, tok = verify(row, drafts[i], params, gen)
                else:
                    kept, tok = False, int(sample(row, params, gen))
                yield tok
                n, pos = n + 1, pos + 1
                hist.append(tok)
                if tok in stop_ids:
                    return
                if automaton is not None:
                    state = automaton.advance(state, tok)
                    if automaton.is_done(state):  # only EOS is left: no forward pass needed
                        yield automaton.eos_ids[0]
                        return
                if n == max_new:
                    return
                if not kept:
                    break
                accepted += 1
            drafter.observe(drafts, accepted)
            length.update(len(drafts), accepted)
            # Room: the bonus token must still fit in max_new, every position in max_len.
            room = min(max_new - n - 1, self.max_len - pos - 1)
            drafts = self._drafts(drafter, hist, min(length.next_k(), room), automaton, state,
                                  stop_ids)
            # hist[-1] sits at pos-1 and has no K/V yet; the drafts follow it.
            rows = self.model.forward(self._ids([hist[-1]] + drafts), pos - 1, cache)  # [1+k, V]

    @staticmethod
    def _drafts(drafter: Drafter, hist: list[int], k: int, automaton: TokenAutomaton | None,
                state: int, stop_ids: frozenset[int]) -> list[int]:
        """The drafter's proposal, cut at the first token the constraint rejects and after a
        token that ends the output (a stop id, or a constraint left with only EOS)."""
        out: list[int] = []
        for d in drafter.propose(hist, k)[:max(k, 0)]:
            if automaton is not None:
                state = automaton.next(state, d)
                if state < 0:
                    break
            out.append(d)
            if d in stop_ids or (automaton is not None and automaton.is_done(state)):
                break
        return out
