"""Prefill by the reference transformer (`self.model`) over the backend's weights and KV cache:
the reference backend's whole forward path, and the prefill of the fast decode backends (graph,
monokernel), whose KV cache is allocated at full length since their kernels and graphs keep its
addresses (with `keep_hidden`, its hidden states too: the prefill writes the prompt's). Decode
belongs to each backend; knows nothing about kernels.
"""

from __future__ import annotations

import torch

from ..model import KVCache, Transformer
from . import Backend


class ReferencePrefill(Backend):
    model: Transformer  # built by the subclass over its own (possibly fused) weights
    # caches keep final hidden states (MTP drafters; set before new_cache): the prefill writes
    # the prompt's, the subclass's decode those of the positions it keeps
    keep_hidden = False

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg, self.max_len, self.device, self.dtype, initial=self.max_len,
                       keep_hidden=self.keep_hidden)

    def prefill(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache, last_only=True)[0]

    def logits(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache)

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.int64, device=self.device)
