"""The graph backend: one decode step of fused Triton kernels, captured in a CUDA graph.

Per layer: RMSNorm+QKV+RoPE+KV append, split-KV attention, O-proj+residual, RMSNorm+gate/up+SiLU,
down-proj+residual; then final norm + LM head + argmax (or device sampling). The step reads the
token and position from device buffers and writes the next token and position back, so replays
chain on the GPU: the host keeps a few steps in flight and only reads tokens. Prefill runs the
reference transformer over the same weights and KV cache. CUDA only; this is the baseline the
monokernel must beat.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..errors import RequestError
from ..model import KVCache, ModelWeights, Transformer, build_weights
from ..sampling import SamplingParams
from . import MAX_TOP_LOGPROBS, TokenLogprob
from .prefill import ReferencePrefill

LOOKAHEAD = 2  # decode steps the host enqueues ahead of the token it is reading
MAX_GRAPHS = 8  # captured graphs kept per KV cache (greedy/sampled x recent constraints)


def _cdiv(a: int, b: int) -> int:  # (triton.cdiv without importing triton here)
    return -(-a // b)


@dataclass
class FusedLayer:
    attn_norm: torch.Tensor  # [H] fp32
    w_qkv: torch.Tensor  # [q + 2kv, H]
    b_qkv: torch.Tensor | None
    q_norm: torch.Tensor | None  # [hd] fp32
    k_norm: torch.Tensor | None
    w_o: torch.Tensor  # [H, q]
    b_o: torch.Tensor | None
    mlp_norm: torch.Tensor  # [H] fp32
    w_gate: torch.Tensor  # [I, H] (first half of one [2I, H] tensor)
    w_up: torch.Tensor  # [I, H] (second half)
    w_down: torch.Tensor  # [H, I]


def fuse_weights(cfg: ModelConfig, w: ModelWeights) -> list[FusedLayer]:
    """Concatenate q/k/v and gate/up into single tensors, and point the reference weights at
    views of them, so both paths share one copy in memory."""
    q, kv, i = cfg.q_size, cfg.kv_size, cfg.intermediate_size
    out = []
    for lw in w.layers:
        w_qkv = torch.cat([lw.wq, lw.wk, lw.wv])
        lw.wq, lw.wk, lw.wv = w_qkv[:q], w_qkv[q:q + kv], w_qkv[q + kv:]
        b_qkv = None
        if lw.bq is not None:
            b_qkv = torch.cat([lw.bq, lw.bk, lw.bv]).float()
        w_gu = torch.cat([lw.w_gate, lw.w_up])
        lw.w_gate, lw.w_up = w_gu[:i], w_gu[i:]
        out.append(FusedLayer(lw.attn_norm, w_qkv, b_qkv, lw.q_norm, lw.k_norm, lw.wo,
                              None if lw.bo is None else lw.bo.float(), lw.mlp_norm,
                              lw.w_gate, lw.w_up, lw.w_down))
    return out


class StepState:
    """Static buffers and captured graphs of one KV cache (graphs bake in its addresses)."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
                 max_len: int):
        from ...kernels import attention as attn
        from ...kernels import matvec as mv

        f32, i32 = torch.float32, torch.int32
        self.tok = torch.zeros(1, dtype=i32, device=device)  # token at position `pos`
        self.pos = torch.zeros(1, dtype=i32, device=device)
        self.x = torch.zeros(cfg.hidden_size, dtype=dtype, device=device)  # residual stream
        self.q = torch.zeros(cfg.num_heads, cfg.head_dim, dtype=dtype, device=device)
        self.attn = torch.zeros_like(self.q)
        self.act = torch.zeros(cfg.intermediate_size, dtype=dtype, device=device)
        self.ws_qkv = torch.zeros(cfg.q_size + 2 * cfg.kv_size, dtype=f32, device=device)
        self.ws_attn = torch.zeros(
            attn.workspace_size(cfg.num_heads, cfg.head_dim, max_len), dtype=f32, device=device)
        self.logits = torch.zeros(cfg.vocab_size, dtype=f32, device=device)
        P = mv.num_programs(cfg.vocab_size, cfg.hidden_size, device)
        self.ws_head = (torch.zeros(P, dtype=f32, device=device),
                        torch.zeros(P, dtype=i32, device=device))
        self.temperature = torch.ones(1, dtype=f32, device=device)
        self.top_k = torch.zeros(1, dtype=i32, device=device)
        self.top_p = torch.ones(1, dtype=f32, device=device)
        self.seed = torch.zeros(1, dtype=torch.int64, device=device)
        self.offset = torch.zeros(1, dtype=torch.int64, device=device)
        self.cstate = torch.zeros(1, dtype=i32, device=device)  # constraint automaton state
        self.ws_argmax = (torch.zeros(_cdiv(cfg.vocab_size, 4096), dtype=f32,
                                      device=device),
                          torch.zeros(_cdiv(cfg.vocab_size, 4096), dtype=i32,
                                      device=device))
        # (greedy?, automaton or None) -> graph; the automaton's tables are baked in.
        self.graphs: dict[tuple[bool, object], torch.cuda.CUDAGraph] = {}
        self.ring = torch.zeros(LOOKAHEAD + 2, dtype=i32, pin_memory=True)
        self.events = [torch.cuda.Event() for _ in range(LOOKAHEAD + 2)]
        # ---- logprobs (decode(logprobs=k)): allocated on first use by `logprob_buffers` ----
        self.lp_all: torch.Tensor | None = None  # [V] log_softmax of the step's raw logits
        self.lp_vals: torch.Tensor | None = None  # [1 + K]: the token's logprob, the top K
        self.lp_ids: torch.Tensor | None = None  # [K] int64: the top K token ids
        self.lp_ring: tuple[torch.Tensor, torch.Tensor] | None = None  # pinned, per ring slot

    def logprob_buffers(self, vocab: int, device: torch.device) -> None:
        if self.lp_all is None:
            k, slots = min(MAX_TOP_LOGPROBS, vocab), len(self.events)
            self.lp_all = torch.zeros(vocab, dtype=torch.float32, device=device)
            self.lp_vals = torch.zeros(1 + k, dtype=torch.float32, device=device)
            self.lp_ids = torch.zeros(k, dtype=torch.int64, device=device)
            self.lp_ring = (torch.zeros(slots, 1 + k, dtype=torch.float32, pin_memory=True),
                            torch.zeros(slots, k, dtype=torch.int64, pin_memory=True))


class GraphBackend(ReferencePrefill):
    name = "graph"
    supports_constraints = True
    supports_logprobs = True  # decode(logprobs=k): scored on the device in the captured step

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_len: int):
        if device.type != "cuda":
            raise RequestError("the graph backend needs a CUDA device (use --backend reference)")
        from ...kernels.attention import HEAD_DIMS

        if cfg.head_dim not in HEAD_DIMS:
            raise RequestError(f"the graph backend supports head_dim {HEAD_DIMS}, not "
                               f"{cfg.head_dim}")
        self.cfg, self.device, self.dtype, self.max_len = cfg, device, dtype, max_len
        w = build_weights(cfg, weights, device, dtype)
        self.layers = fuse_weights(cfg, w)
        self.w = w
        self.model = Transformer(cfg, w, max_len)  # prefill path, same weights and cache
        self.cos, self.sin = self.model.cos.contiguous(), self.model.sin.contiguous()
        self._states: weakref.WeakKeyDictionary[KVCache, StepState] = weakref.WeakKeyDictionary()

    # ---- the captured step ---------------------------------------------------------------

    def _step(self, st: StepState, cache: KVCache, greedy: bool, automaton=None,
              lp: bool = False) -> None:
        """One decode step on the device: st.tok at st.pos -> next st.tok, st.pos + 1 (and the
        constraint state advanced past the new token)."""
        from ...kernels import attention as attn
        from ...kernels import matvec as mv
        from ...kernels.qkv_rope import qkv_rope

        cfg, eps = self.cfg, self.cfg.rms_norm_eps
        torch.index_select(self.w.embed, 0, st.tok, out=st.x.view(1, -1))
        for li, lw in enumerate(self.layers):
            kc, vc = cache.k[li], cache.v[li]  # [nkv, max_len, hd]
            qkv_rope(st.x, lw.w_qkv, lw.b_qkv, lw.attn_norm, lw.q_norm, lw.k_norm, self.cos,
                     self.sin, st.pos, kc, vc, eps, out=st.q, workspace=st.ws_qkv)
            attn.attention(st.q, kc, vc, st.pos, cfg.sliding_window, out=st.attn,
                           workspace=st.ws_attn)
            mv.matvec(lw.w_o, st.attn.view(-1), bias=lw.b_o, residual=st.x)
            mv.gate_up_silu(lw.w_gate, lw.w_up, st.x, norm_weight=lw.mlp_norm, eps=eps,
                            out=st.act)
            mv.matvec(lw.w_down, st.act, residual=st.x)
        if greedy and automaton is None and not lp:
            from ...kernels import lm_head as head

            head.lm_head_argmax(st.x, self.w.norm, self.w.lm_head, eps, out=st.tok,
                                logits=st.logits, workspace=st.ws_head)
        else:
            from ...kernels import lm_head as head

            head.lm_head(st.x, self.w.norm, self.w.lm_head, eps, out=st.logits)
            self._pick_scored(st, greedy, automaton, lp)
        st.pos.add_(1)

    def _pick(self, st: StepState, greedy: bool, automaton) -> None:
        """st.logits -> st.tok: mask by the constraint state, argmax or sample, advance."""
        from ...kernels import constraint_mask as cm
        from ...kernels import lm_head as head

        if automaton is not None:
            cm.mask_logits(st.logits, automaton.bitmask, st.cstate)
        if greedy:
            head.argmax(st.logits, out=st.tok, workspace=st.ws_argmax)
        else:
            head.sample(st.logits, st.temperature, st.top_k, st.top_p, st.seed, st.offset,
                        out=st.tok)
        if automaton is not None:
            cm.advance_state(st.cstate, st.tok, automaton.bitmask, automaton.default,
                             automaton.exc_ptr, automaton.exc_tokens, automaton.exc_next,
                             automaton.max_exc)

    # ---- logprobs: torch ops on the device logits, captured with the step -------------------

    def _pick_scored(self, st: StepState, greedy: bool, automaton, lp: bool) -> None:
        """`_pick`, and with `lp` the picked token's logprob and the top K of the raw logits
        (log_softmax before the constraint mask, which `_pick` applies in place)."""
        if lp:
            st.lp_all.copy_(torch.log_softmax(st.logits, dim=0))
        self._pick(st, greedy, automaton)
        if lp:
            top = torch.topk(st.lp_all, st.lp_ids.numel())
            st.lp_vals[:1].copy_(st.lp_all.index_select(0, st.tok))
            st.lp_vals[1:].copy_(top.values)
            st.lp_ids.copy_(top.indices)

    # ---- graphs and the decode loop ----------------------------------------------------------

    def _graph(self, st: StepState, cache: KVCache, greedy: bool,
               automaton=None, lp: bool = False) -> torch.cuda.CUDAGraph:
        key = (greedy, automaton, lp)
        g = st.graphs.get(key)
        if g is None:
            if len(st.graphs) >= MAX_GRAPHS:  # constrained graphs pile up: drop the oldest
                st.graphs.pop(next(iter(st.graphs)))
            kept = (st.tok, st.pos, st.offset, st.cstate) + ((st.lp_vals, st.lp_ids) if lp else ())
            saved = [t.clone() for t in kept]
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # compile every kernel before capture
                self._step(st, cache, greedy, automaton, lp)
            torch.cuda.current_stream(self.device).wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self._step(st, cache, greedy, automaton, lp)
            for t, v in zip(kept, saved, strict=True):
                t.copy_(v)
            st.graphs[key] = g
        return g

    def _state(self, cache: KVCache) -> StepState:
        st = self._states.get(cache)
        if st is None:
            st = self._states[cache] = StepState(self.cfg, self.device, self.dtype, self.max_len)
        return st

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int, automaton=None,
               logprobs: int | None = None) -> Iterator[int | TokenLogprob]:
        st = self._state(cache)
        greedy = params.greedy
        lp = logprobs is not None
        if lp:
            st.logprob_buffers(self.cfg.vocab_size, self.device)
        host_auto = automaton  # host tables: the host follows the state to see the end
        if automaton is not None:
            automaton = automaton.to(self.device)
            st.cstate.fill_(automaton.state0)
        if not greedy:
            st.temperature.fill_(params.temperature), st.top_k.fill_(params.top_k)
            st.top_p.fill_(params.top_p)
            seed = params.seed if params.seed is not None else int(
                torch.randint(0, 2**62, (1,)).item())
            st.seed.fill_(seed), st.offset.fill_(0)
        st.logits.copy_(logits)
        self._pick_scored(st, greedy, automaton, lp)  # the first token, from prefill logits
        st.pos.fill_(start)
        graph = self._graph(st, cache, greedy, automaton, lp)
        host_state = automaton.state0 if automaton is not None else 0
        slots = len(st.events)

        def publish(i: int) -> None:  # enqueue: token i -> host ring slot
            st.ring[i % slots : i % slots + 1].copy_(st.tok, non_blocking=True)
            if lp:
                st.lp_ring[0][i % slots].copy_(st.lp_vals, non_blocking=True)
                st.lp_ring[1][i % slots].copy_(st.lp_ids, non_blocking=True)
            st.events[i % slots].record()

        def scored(i: int, tok: int) -> TokenLogprob:  # after slot i's event
            vals = st.lp_ring[0][i % slots].tolist()
            ids = st.lp_ring[1][i % slots, :logprobs].tolist()
            return TokenLogprob(tok, vals[0], tuple(zip(ids, vals[1:1 + logprobs], strict=True)))

        publish(0)
        issued = 1
        for i in range(max_new):
            while issued < min(i + 1 + LOOKAHEAD, max_new):
                graph.replay()
                publish(issued)
                issued += 1
            st.events[i % slots].synchronize()
            tok = int(st.ring[i % slots])
            yield scored(i, tok) if lp else tok
            if tok in stop_ids:
                return
            if host_auto is not None:
                host_state = host_auto.next(host_state, tok)
                if host_auto.is_done(host_state):  # only EOS is left
                    eos = host_auto.eos_ids[0]
                    yield TokenLogprob(eos, 0.0) if lp else eos
                    return
