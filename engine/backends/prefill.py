"""Prefill by the reference transformer (`self.model`) over the backend's weights and KV cache:
the reference backend's whole forward path, and the prefill of the fast decode backends (graph,
monokernel), whose KV cache is allocated at full length since their kernels and graphs keep its
addresses (with `keep_hidden`, its hidden states too: the prefill writes the prompt's). Decode
belongs to each backend.

On CUDA the fast backends prefill through CUDA graphs (`ChunkGraphs`): eager PyTorch launches
~1,700 kernels for one prefill of a 30-layer model, and on an H200 the host's launch time, not
the GPU, set its length (SmolLM2-135M: 24-52 ms whatever the token count, 4 ms of it on the
GPU; bench/results/prefill-graphs-20261129). The prompt goes in chunks of 16, 64 or 256
positions, each one replay of a graph captured once per chunk size and cache (all sizes at
the cache's first prefill: ChunkGraphs.capture_all), the start a device value. What a graph
runs is `FusedChunk`: Transformer.forward_chunk's math in ~12 kernels per layer instead of
~50 (one GEMM for q/k/v and one for gate/up over the backends' concatenated weights, the Triton
RMSNorm with the residual add fused, one kernel for q/k norm + RoPE + K/V append,
kernels.attention.chunk_attention over the cache up to the chunk's end, one kernel for SiLU *
up). Transformer.forward_chunk itself (attention over a fixed key bucket) is
what ChunkGraphs runs without a FusedChunk: the CPU tests of the chunking. Embedded SmolLM2 on
an H200: 1.0-1.25 ms for 1-168 tokens, 5.4 ms for 881 (24-43 ms eager; bench/results/
prefill-graphs-20261129-s8).
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F

from ..model import KVCache, Transformer
from . import Backend

CHUNKS = (16, 64, 256)  # positions per captured prefill chunk
MIN_KEYS = 256  # smallest key bucket (keys attended: a power of two >= the chunk's end)


def _rows(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """One [rows, K] view over 2-d weights that are consecutive rows of one tensor (as the
    graph and monokernel backends lay out q/k/v and gate/up), or None."""
    if any(t is None for t in parts):
        return None
    a, K = parts[0], parts[0].shape[1]
    off = a.storage_offset()
    for t in parts:
        if (t.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()
                or t.stride() != (K, 1) or t.storage_offset() != off):
            return None
        off += t.shape[0] * K
    return a.as_strided((sum(t.shape[0] for t in parts), K), (K, 1), a.storage_offset())


class FusedChunk:
    """Transformer.forward_chunk with fewer kernels (CUDA; see the module text): the same
    inputs and outputs, the math of the graph backend's decode kernels (RMSNorm in fp32 up to
    the output, q/k norm and RoPE in fp32). Attention is kernels.attention.chunk_attention,
    which reads the keys up to the chunk's end as the device positions say: `keys` is not
    used (one graph per chunk size serves every start)."""

    def __init__(self, model: Transformer):
        from ...kernels.activation import silu_mul
        from ...kernels.attention import chunk_attention
        from ...kernels.qkv_rope import rope_append_rows
        from ...kernels.rmsnorm import add_rmsnorm, rmsnorm

        self.model, self.silu_mul, self.rope = model, silu_mul, rope_append_rows
        self.attention = chunk_attention
        self.rmsnorm, self.add_rmsnorm = rmsnorm, add_rmsnorm
        self.layers = []
        for lw in model.w.layers:
            qkv = _rows([lw.wq, lw.wk, lw.wv])
            gu = _rows([lw.w_gate, lw.w_up])
            bias = None if lw.bq is None else torch.cat([lw.bq, lw.bk, lw.bv])
            self.layers.append((lw, qkv, bias, gu))

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, last: torch.Tensor,
                 cache: KVCache, keys: int) -> torch.Tensor:
        m = self.model
        cfg, w, eps = m.cfg, m.w, m.cfg.rms_norm_eps
        C, G = tokens.shape[0], cfg.group_size
        x = w.embed[tokens]  # [C, H]: the residual stream
        h = self.rmsnorm(x, w.layers[0].attn_norm, eps)
        for li, (lw, w_qkv, b_qkv, w_gu) in enumerate(self.layers):
            if w_qkv is not None:
                qkv = F.linear(h, w_qkv, b_qkv)
            else:
                qkv = torch.cat([F.linear(h, lw.wq, lw.bq), F.linear(h, lw.wk, lw.bk),
                                 F.linear(h, lw.wv, lw.bv)], dim=1)
            q = self.rope(qkv, lw.q_norm, lw.k_norm, m.cos, m.sin, pos, cache.k[li],
                          cache.v[li], eps)  # [nkv, G * C, hd]; K/V appended
            out = self.attention(q, cache.k[li], cache.v[li], pos, cfg.sliding_window)
            out = out.view(cfg.num_kv_heads, G, C, cfg.head_dim).permute(2, 0, 1, 3).reshape(
                C, cfg.q_size)
            h = self.add_rmsnorm(F.linear(out, lw.wo, lw.bo), x, lw.mlp_norm, eps)
            if w_gu is not None:
                act = self.silu_mul(F.linear(h, w_gu))
            else:
                act = F.silu(F.linear(h, lw.w_gate)) * F.linear(h, lw.w_up)
            nxt = w.layers[li + 1].attn_norm if li + 1 < len(self.layers) else w.norm
            h = self.add_rmsnorm(F.linear(act, lw.w_down), x, nxt, eps)
        if cache.hidden is not None:
            cache.hidden.index_copy_(0, pos, x)
        return F.linear(h.index_select(0, last), w.lm_head).float()  # [1, V]


class ChunkGraphs:
    """The captured prefill graphs of one KV cache (they bake in its addresses): per (chunk C,
    keys K) one graph of the chunk forward (`fused`, a FusedChunk, on CUDA; else
    model.forward_chunk) over static inputs (tokens, positions, the row whose logits are
    kept), all sharing one memory pool (replayed one at a time)."""

    def __init__(self, model: Transformer, cache: KVCache, capture: bool = True,
                 fused: FusedChunk | None = None):
        self.model, self.cache, self.capture = model, weakref.ref(cache), capture
        self.forward = fused or model.forward_chunk
        self.bucketed = fused is None  # forward_chunk attends to [0, keys): a graph per bucket
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
            return self.forward(tok, pos, self.last, cache, keys)

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

    def capture_all(self) -> None:
        """Capture the graph of every chunk size (that fits the cache) now, not at its first
        use: a capture costs ~50 ms on the H200 (SmolLM2), which a conversation's first long
        turn would pay mid-session (the replay's edit_file turn 4: 50 ms to first token
        against 1.5 ms). The runs write K/V (and hidden rows) at the cache's last positions,
        past anything a sequence holds until it reaches them (and then overwrites them)."""
        cache = self.cache()
        if not self.capture or self.bucketed:
            return
        for C in CHUNKS:
            if cache.capacity >= C and (C, cache.capacity) not in self.graphs:
                self.tokens[:C].zero_()
                torch.arange(cache.capacity - C, cache.capacity, out=self.pos[:C])
                self.last.fill_(0)
                self._run(C, cache.capacity)

    def prefill(self, tokens: list[int], start: int) -> torch.Tensor | None:
        """Logits [1, V] of the last token, or None when `plan` declines."""
        cache = self.cache()
        chunks = self.plan(len(tokens), start, cache.capacity)
        if chunks is None:
            return None
        if chunks and not self.graphs:  # this cache's first prefill: every size at once
            self.capture_all()
        ids = torch.tensor(tokens, dtype=torch.int64, device=self.tokens.device)
        at = 0
        for m, C, keys in chunks:
            self.tokens[:m].copy_(ids[at:at + m])
            torch.arange(start + at, start + at + C, out=self.pos[:C])
            self.last.fill_(m - 1)
            out = self._run(C, keys if self.bucketed else cache.capacity)
            at += m
        return out.clone()


class ReferencePrefill(Backend):
    model: Transformer  # built by the subclass over its own (possibly fused) weights
    # caches keep final hidden states (MTP drafters; set before new_cache): the prefill writes
    # the prompt's, the subclass's decode those of the positions it keeps
    keep_hidden = False
    kv_extra_layers = 0  # layers of K/V past the model's (an MTP module run as layer L)
    graph_prefill = True  # on CUDA: through ChunkGraphs (False: eager, as on CPU)

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg, self.max_len, self.device, self.dtype, initial=self.max_len,
                       keep_hidden=self.keep_hidden, extra_layers=self.kv_extra_layers)

    def prefill(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        if self.graph_prefill and self.device.type == "cuda" and tokens:
            graphs = self._graphs().get(cache)
            if graphs is None:
                graphs = self._graphs()[cache] = ChunkGraphs(self.model, cache,
                                                              fused=self._fused_chunk)
            logits = graphs.prefill(tokens, start)
            if logits is not None:
                return logits[0]
        return self.model.forward(self._ids(tokens), start, cache, last_only=True)[0]

    @functools.cached_property
    def _fused_chunk(self) -> FusedChunk:
        return FusedChunk(self.model)

    @functools.cached_property
    def _chunk_graphs(self) -> weakref.WeakKeyDictionary[KVCache, ChunkGraphs]:
        return weakref.WeakKeyDictionary()

    def _graphs(self) -> weakref.WeakKeyDictionary[KVCache, ChunkGraphs]:
        """Each KV cache's captured prefill graphs (dropped with the cache)."""
        return self._chunk_graphs

    def logits(self, cache: KVCache, tokens: list[int], start: int) -> torch.Tensor:
        return self.model.forward(self._ids(tokens), start, cache)

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.int64, device=self.device)
