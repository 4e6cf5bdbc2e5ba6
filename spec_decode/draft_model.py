"""A draft model: a smaller model with the target's tokenizer drafts k tokens greedily.

The draft model keeps its own KV cache in step with the sequence: the first proposal prefills
the history, later ones feed only the tokens that are new since (the accepted drafts and the
step's own token, typically 1-2), and a rejection rolls its cache back by length (positions
past the common prefix are overwritten), never re-prefilling the whole history per step. One
cache per target KV cache (`bind`), so engine sessions keep theirs across turns.

Two ways to get one:
- `DraftModelDrafter.load(path, ...)` (drafter="draft:PATH"): any model the engine loads (HF
  folder, GGUF) whose vocabulary size equals the target's (same tokenizer; checked).
- `DraftModelDrafter.early_exit(...)` (drafter="early:N"): the target itself cut after its first
  N layers, then the target's final norm and LM head: an early-exit model sharing the target's
  weight tensors (no copy; its KV cache holds N layers). Untrained for early exit, so its
  drafts agree with the target far less than a real small model's would: on the embedded
  SmolLM2-135M (30 layers), top-1 agreement with the full model is 0.57 at N = 28, 0.35 at
  N = 24, 0.19 at N = 20, under 0.1 below 16 (replay traces, greedy) -- while a draft token
  costs about N/30 of a target step. It is a stand-in for the embedded model, which has no
  smaller sibling with its tokenizer available offline, and, with N = all layers, the target
  itself (acceptance total: a test of the machinery).
"""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from agentfast.engine.config import ModelConfig
from agentfast.engine.errors import ModelLoadError, RequestError
from agentfast.engine.model import KVCache, ModelWeights, Transformer

from .drafters import Drafter

if TYPE_CHECKING:
    from agentfast.engine.loaders import LoadedModel
    from agentfast.engine.tokenizer import Tokenizer


def forward_params(cfg: ModelConfig) -> int:
    """Weights one decode step reads (decoder layers plus the LM head; the embedding is a
    lookup): what a batch-1 step's time is proportional to, on bandwidth-bound hardware."""
    h = cfg.hidden_size
    layer = h * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * h + 3 * h * cfg.intermediate_size
    return cfg.num_layers * layer + cfg.vocab_size * h


class _DraftState:
    """The draft model's KV cache for one sequence and the tokens it holds K/V for."""

    def __init__(self, model: Transformer):
        self.kv: KVCache = model.new_cache(initial=64)
        self.tokens: list[int] = []


class DraftModelDrafter(Drafter):
    """Greedy drafts from a draft model (reference transformer) with its own KV cache."""

    def __init__(self, model: Transformer, source: str = "", draft_cost: float | None = None,
                 target_cfg: ModelConfig | None = None):
        super().__init__()
        self.model, self.source = model, source
        if target_cfg is not None:
            check_vocab(model.cfg, target_cfg, source)
        if draft_cost is None:  # a draft token in target steps, by weights read per step
            draft_cost = (forward_params(model.cfg) / forward_params(target_cfg)
                          if target_cfg is not None else 0.0)
        self.draft_cost = draft_cost
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._unbound: _DraftState | None = None  # propose() without bind()
        self._key: weakref.ref | None = None
        self.forwards = 0  # draft model forward calls (for reports and tests)
        self.fed = 0  # positions they computed

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def early_exit(cls, cfg: ModelConfig, weights: ModelWeights, num_layers: int, max_len: int,
                   draft_cost: float | None = None) -> DraftModelDrafter:
        """The target (config `cfg`, built weights `weights`, e.g. a reference backend's
        `model.w`) truncated to its first `num_layers` layers, with its final norm and LM head:
        an early-exit model over the same tensors."""
        if not 1 <= num_layers <= cfg.num_layers:
            raise RequestError(f"early exit after {num_layers} layers: the model has "
                               f"{cfg.num_layers} (1..{cfg.num_layers})")
        dcfg = replace(cfg, num_layers=num_layers)
        w = ModelWeights(embed=weights.embed, layers=list(weights.layers[:num_layers]),
                         norm=weights.norm, lm_head=weights.lm_head)
        return cls(Transformer(dcfg, w, max_len),
                   f"early exit after layer {num_layers} of {cfg.num_layers}", draft_cost, cfg)

    @classmethod
    def from_model(cls, draft: LoadedModel, target_cfg: ModelConfig, device: torch.device | str,
                   dtype: torch.dtype, max_len: int, target_tokenizer: Tokenizer | None = None,
                   draft_cost: float | None = None) -> DraftModelDrafter:
        """A loaded draft model (HF-named CPU weights), built on `device` in `dtype`."""
        from agentfast.engine.model import build_weights, check_weights

        src = str(draft.source)
        check_vocab(draft.config, target_cfg, src)
        if target_tokenizer is not None:
            check_tokenizer(draft.tokenizer, target_tokenizer, src)
        weights = draft.weights
        if any(k.startswith(f"model.layers.{draft.config.num_layers}.") for k in weights):
            from .mtp import split_checkpoint_mtp  # DeepSeek-style MTP layers: not needed here

            weights = split_checkpoint_mtp(draft.config, weights)[0]
        check_weights(draft.config, weights, src)
        w = build_weights(draft.config, weights, device, dtype)
        max_len = min(max_len, draft.config.max_position_embeddings)
        return cls(Transformer(draft.config, w, max_len), src, draft_cost, target_cfg)

    @classmethod
    def load(cls, path: str, target_cfg: ModelConfig, device: torch.device | str,
             dtype: torch.dtype, max_len: int, target_tokenizer: Tokenizer | None = None,
             draft_cost: float | None = None) -> DraftModelDrafter:
        """The model at `path` (anything `load_model` reads) as the draft model."""
        from agentfast.engine.loaders import load_model

        return cls.from_model(load_model(path), target_cfg, device, dtype, max_len,
                              target_tokenizer, draft_cost)

    # ---- drafting ------------------------------------------------------------------------

    def bind(self, cache) -> None:
        self._key = weakref.ref(cache)

    def _state(self) -> _DraftState:
        cache = self._key() if self._key is not None else None
        if cache is None:
            if self._unbound is None:
                self._unbound = _DraftState(self.model)
            return self._unbound
        st = self._states.get(cache)
        if st is None:
            st = self._states[cache] = _DraftState(self.model)
        return st

    def _forward(self, st: _DraftState, ids: list[int], start: int) -> torch.Tensor:
        self.forwards += 1
        self.fed += len(ids)
        t = torch.tensor(ids, dtype=torch.int64, device=self.model.device)
        return self.model.forward(t, start, st.kv, last_only=True)[0]  # [V]

    @torch.inference_mode()
    def propose(self, history: list[int], k: int) -> list[int]:
        n = len(history)
        k = min(k, self.model.max_len - n + 1)  # every draft but the last gets a position
        if k <= 0 or n == 0:
            return []
        st = self._state()
        held = st.tokens
        same = min(len(held), n)
        if held[:same] != history[:same]:  # diverged (a rejected draft, another prompt)
            same = next(i for i in range(same) if held[i] != history[i])
        same = min(same, n - 1)  # the last token is fed again: its logits give the first draft
        logits = self._forward(st, history[same:], same)
        st.tokens = list(history)
        drafts: list[int] = []
        while True:
            tok = int(torch.argmax(logits))
            drafts.append(tok)
            if len(drafts) == k:
                return drafts
            logits = self._forward(st, [tok], len(st.tokens))
            st.tokens.append(tok)


def check_vocab(draft: ModelConfig, target: ModelConfig, source: str) -> None:
    if draft.vocab_size != target.vocab_size:
        raise ModelLoadError(
            f"{source}: draft model vocabulary has {draft.vocab_size} tokens, the target's "
            f"{target.vocab_size}: a draft model must share the target's tokenizer and "
            "vocabulary size")


def check_tokenizer(draft: Tokenizer, target: Tokenizer, source: str) -> None:
    probe = "def f(x):\n    return {\"a\": [1, 2]}  # The quick brown fox, 0123456789."
    if draft.encode(probe) != target.encode(probe):
        raise ModelLoadError(f"{source}: the draft model's tokenizer splits text differently "
                             "from the target's: a draft model must share the target's tokenizer")
