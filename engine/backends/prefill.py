"""Prefill by the reference transformer (`self.model`) over the backend's weights and KV cache:
the reference backend's whole forward path, and the prefill of the fast decode backends (graph,
monokernel), whose KV cache is allocated at full length since their kernels and graphs keep its
addresses (with `keep_hidden`, its hidden states too: the prefill writes the prompt's). Decode
belongs to each backend; knows nothing about kernels.

On CUDA the fast backends prefill through CUDA graphs (`ChunkGraphs`): eager PyTorch launches
~1,700 kernels for one prefill of a 30-layer model, and on an H200 the host's launch time, not
the GPU, set its length (SmolLM2-135M: 26-38 ms whatever the token count, 4 ms of it on the
GPU; bench/results/prefill-graphs-20261129). The prompt goes in chunks of 16, 64 or 256
positions, each one replay of a graph of Transformer.forward_chunk captured once per (chunk,
key bucket) and cache, the start a device value.
"""

from __future__ import annotations

import weakref

import torch

from ..model import KVCache, Transformer
from . import Backend

CHUNKS = (16, 64, 256)  # positions per captured prefill chunk
MIN_KEYS = 256  # smallest key bucket (keys attended: a power of two >= the chunk's end)


class ChunkGraphs:
    """The captured prefill graphs of one KV cache (they bake in its addresses): per (chunk C,
    keys K) one graph of model.forward_chunk over static inputs (tokens, positions, the row
    whose logits are kept), all sharing one memory pool (replayed one at a time)."""

    def __init__(self, model: Transformer, cache: KVCache, capture: bool = True):
        self.model, self.cache, self.capture = model, weakref.ref(cache), capture
        dev = cache.k.device
        c = max(CHUNKS)
        self.tokens = torch.zeros(c, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(c, dtype=torch.int64, device=dev)
        self.last = torch.zeros(1, dtype=torch.int64, device=dev)
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    @staticmethod
    def plan(n: int, start: int, capacity: int) -> list[tuple[int, int, int]] | None:
        """[(tokens in the chunk, chunk C, keys K)] covering n tokens from `start`: chunks of
        the largest size while more remain, the last the smallest that holds the rest; None
        when a padded chunk would reach past the cache (the caller prefills eagerly)."""
        out, at = [], start
        while at < start + n:
            left = start + n - at
            C = next((c for c in CHUNKS if c >= left), max(CHUNKS))
            keys = max(MIN_KEYS, 1 << (at + C - 1).bit_length())
            if at + C > capacity:
                return None
            out.append((min(left, C), C, min(keys, capacity)))
            at += min(left, C)
        return out

    def _run(self, C: int, keys: int) -> torch.Tensor:
        """One chunk over the static inputs: its graph replayed (captured on first use), or
        without `capture` the same forward run eagerly (CPU tests of the chunking)."""
        cache = self.cache()
        tok, pos = self.tokens[:C], self.pos[:C]

        def run() -> torch.Tensor:
            return self.model.forward_chunk(tok, pos, self.last, cache, keys)

        if not self.capture:
            return run()
        g = self.graphs.get((C, keys))
        if g is None:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up (cuBLAS handles, workspaces): real writes
                run()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = run()
            g = self.graphs[(C, keys)] = (graph, out)
        g[0].replay()
        return g[1]

    def prefill(self, tokens: list[int], start: int) -> torch.Tensor | None:
        """Logits [1, V] of the last token, or None when `plan` declines."""
        cache = self.cache()
        chunks = self.plan(len(tokens), start, cache.capacity)
        if chunks is None:
            return None
        ids = torch.tensor(tokens, dtype=torch.int64, device=self.tokens.device)
        at = 0
        for m, C, keys in chunks:
            self.tokens[:m].copy_(ids[at:at + m])
            torch.arange(start + at, start + at + C, out=self.pos[:C])
            self.last.fill_(m - 1)
            out = self._run(C, keys)
            at += m
        return out.clone()


class ReferencePrefill(Backend):
    model: Transformer  # built by the subclass over its own (possibly fused) weights
    # caches keep final hidden states (MTP drafters; set before new_cache): the prefill writes
    # the prompt's, the subclass's decode those of the positions it keeps
    keep_hidden = False
    graph_prefill = True  # on CUDA: through ChunkGraphs (False: eager, as on CPU)

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg, self.max_len, self.device, self.dtype, initial=self.max_len,
                       keep_hidden=self.keep_hidden)

    def prefill(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        if self.graph_prefill and self.device.type == "cuda" and tokens:
            graphs = self._graphs().get(cache)
            if graphs is None:
                graphs = self._graphs()[cache] = ChunkGraphs(self.model, cache)
            logits = graphs.prefill(tokens, start)
            if logits is not None:
                return logits[0]
        return self.model.forward(self._ids(tokens), start, cache, last_only=True)[0]

    def _graphs(self) -> weakref.WeakKeyDictionary[KVCache, ChunkGraphs]:
        g = self.__dict__.get("_chunk_graphs")
        if g is None:
            g = self.__dict__["_chunk_graphs"] = weakref.WeakKeyDictionary()
        return g

    def logits(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache)

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.int64, device=self.device)
