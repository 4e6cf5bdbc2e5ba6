"""The reference backend: the PyTorch transformer and the PyTorch sampler, step by step.

Runs on CPU or CUDA; one host round trip per token (it is the oracle, not the fast path).
Constraints are applied with tensor ops (the state's bitmask row), the state advanced on the host.
With a drafter (agentfast.spec_decode), each step scores the last token plus k drafts in one
forward and keeps the accepted prefix; rejected positions' K/V are overwritten later. The
drafter's DraftPolicy picks k per step from the recent acceptance and this backend's step costs
(`step_costs`), and switches drafting off where it does not pay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from ..model import KVCache, Transformer, build_weights
from ..sampling import SamplingParams, make_generator, sample
from . import TokenLogprob, token_logprob
from .drafting import draft_policy, propose_drafts
from .prefill import ReferencePrefill

# Time of a T-position forward relative to T = 1 (spec_decode.policy.StepCost tables). CPU:
# measured with spec_decode.policy.measure_step_costs, float32, one thread, SmolLM2-135M at 124
# tokens of context on a 2-core VM (noisy, +-10%; the steps are the BLAS kernels' row blocks).
# CUDA: batch 1 is launch-bound, a few more positions nearly free (an estimate).
CPU_STEP_COSTS = {1: 1.0, 2: 1.02, 3: 1.05, 4: 1.53, 5: 1.57, 6: 1.6, 7: 1.95, 8: 1.95, 9: 2.0,
                  13: 3.0, 17: 3.2}
CUDA_STEP_COSTS = {1: 1.0, 2: 1.02, 9: 1.15, 17: 1.3}

if TYPE_CHECKING:
    from agentfast.spec_decode import Drafter

    from ..constraints import TokenAutomaton


class ReferenceBackend(ReferencePrefill):
    name = "reference"
    supports_constraints = True
    supports_drafter = True  # decode takes drafter= (agentfast.spec_decode)
    supports_logprobs = True  # decode takes logprobs=k (from the step's own logits)
    keep_hidden = False  # caches keep final hidden states (MTP drafters; set before new_cache)
    graph_prefill = False  # the oracle prefills eagerly (and its caches grow: no fixed addresses)
    step_costs: dict[int, float] | None = None  # {T: cost} of a T-position step (DraftPolicy)

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_len: int):
        self.cfg, self.device, self.dtype, self.max_len = cfg, device, dtype, max_len
        if device.type == "cpu":
            # Dequantized GGUF weights produce denormal activations; x86 handles them ~10x
            # slower (measured: 4 -> 28 tok/s on the embedded model). Flushing them to zero
            # is process-wide and changes results only below 1e-38.
            torch.set_flush_denormal(True)
        self.model = Transformer(cfg, build_weights(cfg, weights, device, dtype), max_len)
        self.step_costs = dict(CPU_STEP_COSTS if device.type == "cpu" else CUDA_STEP_COSTS)

    def new_cache(self) -> KVCache:
        # Grows with the sequence (no fixed addresses needed).
        return self.model.new_cache(keep_hidden=self.keep_hidden)

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int,
               automaton: TokenAutomaton | None = None, drafter: Drafter | None = None,
               history: list[int] | None = None,
               logprobs: int | None = None) -> Iterator[int | TokenLogprob]:
        """Backend.decode; with `drafter`, speculative (same greedy output, same sampling
        distribution). `history`: the tokens before `start` (the prompt), for the drafter.
        `logprobs`: yield TokenLogprobs, scored on each token's row of logits (pre-mask)."""
        if drafter is not None:
            steps = self._decode_spec(cache, logits, start, params, stop_ids, max_new,
                                      automaton, drafter, list(history or []), logprobs)
        else:
            steps = self._decode(cache, logits, start, params, stop_ids, max_new, automaton,
                                 logprobs)
        yield from steps  # (closing this generator closes `steps`)

    @staticmethod
    def _out(tok: int, row: torch.Tensor | None, k: int | None) -> int | TokenLogprob:
        """The yielded item: the id, or with logprobs its TokenLogprob from `row` (None: a
        token forced without a forward pass)."""
        if k is None:
            return tok
        return token_logprob(row, tok, k) if row is not None else TokenLogprob(tok, 0.0)

    def _decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
                stop_ids: frozenset[int], max_new: int, automaton: TokenAutomaton | None,
                k: int | None) -> Iterator[int | TokenLogprob]:
        gen = None if params.greedy else make_generator(params.seed, self.device)
        masks = automaton.to(logits.device) if automaton is not None else None
        state = automaton.state0 if automaton is not None else 0
        pos = start
        for i in range(max_new):
            raw = logits
            if masks is not None:
                logits = masks.mask_logits(logits, state)  # disallowed tokens -> -inf
            tok = int(sample(logits, params, gen))
            yield self._out(tok, raw, k)
            state, end = _after(tok, stop_ids, automaton, state)
            if end is not None:
                yield from (self._out(t, None, k) for t in end)
                return
            if i == max_new - 1:
                return
            logits = self.model.forward(self._ids([tok]), pos, cache, last_only=True)[0]
            pos += 1

    def _decode_spec(self, cache: KVCache, logits: torch.Tensor, start: int,
                     params: SamplingParams, stop_ids: frozenset[int], max_new: int,
                     automaton: TokenAutomaton | None, drafter: Drafter,
                     hist: list[int], k: int | None = None) -> Iterator[int | TokenLogprob]:
        from agentfast.spec_decode import verify

        gen = None if params.greedy else make_generator(params.seed, self.device)
        masks = automaton.to(logits.device) if automaton is not None else None
        state = automaton.state0 if automaton is not None else 0
        policy = draft_policy(self, drafter)
        if hasattr(drafter, "bind"):  # MTP reads hidden states from it; a draft model keys
            drafter.bind(cache)  # its own KV cache on it
        pos, n = start, 0  # pos: position of the next token to yield; n: tokens yielded
        rows, drafts = logits[None], []  # rows[i]: distribution at pos+i; drafts[i]: its guess
        guessed = 0  # drafts[:guessed] are the drafter's; the rest are forced by the constraint
        while True:
            accepted = 0
            for i, raw in enumerate(rows):
                row = raw
                if masks is not None:
                    row = masks.mask_logits(row, state)  # disallowed tokens -> -inf
                if i < len(drafts):
                    kept, tok = verify(row, drafts[i], params, gen)
                else:
                    kept, tok = False, int(sample(row, params, gen))
                yield self._out(tok, raw, k)
                n, pos = n + 1, pos + 1
                hist.append(tok)
                state, end = _after(tok, stop_ids, automaton, state)
                if end is not None:
                    yield from (self._out(t, None, k) for t in end)
                    return
                if n == max_new:
                    return
                if not kept:
                    break
                accepted += 1
            drafter.observe(drafts[:guessed], min(accepted, guessed))
            policy.update(guessed, min(accepted, guessed))
            # Room: the bonus token must still fit in max_new, every position in max_len.
            room = min(max_new - n - 1, self.max_len - pos - 1)
            drafts, guessed = propose_drafts(drafter, hist, min(policy.next_k(), room), room,
                                             automaton, state, stop_ids)
            # hist[-1] sits at pos-1 and has no K/V yet; the drafts follow it.
            rows = self.model.forward(self._ids([hist[-1]] + drafts), pos - 1, cache)  # [1+k, V]


def _after(tok: int, stop_ids: frozenset[int], automaton: TokenAutomaton | None,
           state: int) -> tuple[int, list[int] | None]:
    """After yielding `tok`: (the constraint state, None to go on, or the tokens left to yield
    before the sequence ends: none at a stop id; EOS, forced without a forward pass, when the
    automaton allows only EOS)."""
    if tok in stop_ids:
        return state, []
    if automaton is not None:
        state = automaton.advance(state, tok)
        if automaton.is_done(state):
            return state, [automaton.eos_ids[0]]
    return state, None
