"""The reference transformer: plain PyTorch, CPU or CUDA, float32 or bfloat16.

This is the oracle every fast path is checked against, and the CPU fallback. It knows the math
of Llama / Qwen2 / Qwen3 / Mistral decoders and the KV cache layout; it knows nothing about
files, tokenizers or sampling. Weights are looked up by their HF names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig
from .errors import ModelLoadError
from .rope import apply_rope, rope_tables


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [H]
    wq: torch.Tensor  # [nh*hd, H]
    wk: torch.Tensor  # [nkv*hd, H]
    wv: torch.Tensor  # [nkv*hd, H]
    wo: torch.Tensor  # [H, nh*hd]
    mlp_norm: torch.Tensor  # [H]
    w_gate: torch.Tensor  # [I, H]
    w_up: torch.Tensor  # [I, H]
    w_down: torch.Tensor  # [H, I]
    bq: torch.Tensor | None = None
    bk: torch.Tensor | None = None
    bv: torch.Tensor | None = None
    bo: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None  # [hd] (Qwen3)
    k_norm: torch.Tensor | None = None


@dataclass
class ModelWeights:
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H] (the embedding itself when tied)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    h, i, q, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.q_size, cfg.kv_size, cfg.head_dim
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
        if cfg.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
        if cfg.o_bias:
            shapes[p + "self_attn.o_proj.bias"] = (h,)
        if cfg.qk_norm:
            shapes.update({p + "self_attn.q_norm.weight": (hd,),
                           p + "self_attn.k_norm.weight": (hd,)})
    return shapes


def check_weights(cfg: ModelConfig, sd: dict[str, torch.Tensor], source: str) -> None:
    """Every expected tensor present with its shape, nothing unexpected left over."""
    expected = expected_shapes(cfg)
    for name, shape in expected.items():
        if name not in sd:
            raise ModelLoadError(f"{source}: tensor {name!r} is missing")
        if tuple(sd[name].shape) != shape:
            raise ModelLoadError(f"{source}: tensor {name!r} has shape {tuple(sd[name].shape)}, "
                                 f"config says {shape}")
    extra = sorted(set(sd) - set(expected) - {"lm_head.weight"})
    extra = [n for n in extra if not n.endswith("rotary_emb.inv_freq")]
    if extra:
        raise ModelLoadError(f"{source}: unexpected tensor {extra[0]!r} "
                             f"({len(extra)} unexpected in all)")


def build_weights(cfg: ModelConfig, sd: dict[str, torch.Tensor], device: torch.device | str,
                  dtype: torch.dtype) -> ModelWeights:
    """Move and cast HF-named CPU tensors into ModelWeights (norm weights kept in float32)."""

    def t(name: str, norm: bool = False) -> torch.Tensor:
        return sd[name].to(device=device, dtype=torch.float32 if norm else dtype)

    def opt(name: str, norm: bool = False) -> torch.Tensor | None:
        return t(name, norm) if name in sd else None

    layers = []
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        a, m = p + "self_attn.", p + "mlp."
        layers.append(LayerWeights(
            attn_norm=t(p + "input_layernorm.weight", True),
            wq=t(a + "q_proj.weight"), wk=t(a + "k_proj.weight"), wv=t(a + "v_proj.weight"),
            wo=t(a + "o_proj.weight"),
            mlp_norm=t(p + "post_attention_layernorm.weight", True),
            w_gate=t(m + "gate_proj.weight"), w_up=t(m + "up_proj.weight"),
            w_down=t(m + "down_proj.weight"),
            bq=opt(a + "q_proj.bias"), bk=opt(a + "k_proj.bias"), bv=opt(a + "v_proj.bias"),
            bo=opt(a + "o_proj.bias"),
            q_norm=opt(a + "q_norm.weight", True), k_norm=opt(a + "k_norm.weight", True),
        ))
    embed = t("model.embed_tokens.weight")
    head = embed if cfg.tie_word_embeddings else t("lm_head.weight")
    return ModelWeights(embed=embed, layers=layers, norm=t("model.norm.weight", True), lm_head=head)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm: statistics in float32, weight applied after casting back to x.dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (w * xf.to(x.dtype)).to(x.dtype)


# Without cuDNN: on an H200 (torch 2.11) the default picks cuDNN attention for a masked
# one-query call and builds a plan for every new key length, ~70 ms each (every decode step of
# the MTP drafter, every new prompt length), against ~0.5 ms for memory-efficient attention
# (bench/results/spec-decode-gpu-20261129-s5/README.md)
_SDPA = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
         gqa: bool) -> torch.Tensor:
    """F.scaled_dot_product_attention with a boolean mask (True = attend), cuDNN excluded."""
    with sdpa_kernel(_SDPA):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def causal_mask(q_pos: torch.Tensor, keys: int, window: int | None = None) -> torch.Tensor:
    """[T, keys] bool, True = attend: key position <= query position (q_pos [T] int64, on the
    device), and within `window` past positions when given (sliding-window attention)."""
    k_pos = torch.arange(keys, device=q_pos.device)[None, :]
    mask = k_pos <= q_pos[:, None]
    if window:
        mask &= k_pos > q_pos[:, None] - window
    return mask


class KVCache:
    """Keys and values of one sequence: k, v [layers, kv_heads, capacity, head_dim].

    Grows by doubling up to `max_len`; the owner tracks how many positions are valid. With
    `keep_hidden`, also the final hidden state of every position before the final norm,
    `hidden` [capacity, H] (what MTP drafters read); else `hidden` is None. `extra_layers`:
    layers of K/V past the model's (an MTP module's, which the monokernel runs as layer L)."""

    def __init__(self, cfg: ModelConfig, max_len: int, device: torch.device | str,
                 dtype: torch.dtype, initial: int = 256, keep_hidden: bool = False,
                 extra_layers: int = 0):
        self.cfg, self.max_len, self.device, self.dtype = cfg, max_len, device, dtype
        self.extra_layers = extra_layers
        self.k = self.v = torch.empty(0)
        self.hidden: torch.Tensor | None = torch.empty(0) if keep_hidden else None
        self._alloc(min(initial, max_len))

    def _alloc(self, cap: int) -> None:
        c = self.cfg
        shape = (c.num_layers + self.extra_layers, c.num_kv_heads, cap, c.head_dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        n = min(self.k.shape[2], cap) if self.k.dim() == 4 else 0
        if n:
            k[:, :, :n] = self.k[:, :, :n]
            v[:, :, :n] = self.v[:, :, :n]
        self.k, self.v = k, v
        if self.hidden is not None:
            hidden = torch.zeros(cap, c.hidden_size, device=self.device, dtype=self.dtype)
            if n:
                hidden[:n] = self.hidden[:n]
            self.hidden = hidden

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def ensure(self, n: int) -> None:
        assert n <= self.max_len, f"KV cache of {self.max_len} positions asked for {n}"
        if n > self.capacity:
            cap = self.capacity
            while cap < n:
                cap *= 2
            self._alloc(min(cap, self.max_len))


class Transformer:
    """Reference forward pass over a KV cache, T positions at a time (prefill or decode)."""

    def __init__(self, cfg: ModelConfig, weights: ModelWeights, max_len: int):
        self.cfg, self.w, self.max_len = cfg, weights, max_len
        self.device, self.dtype = weights.embed.device, weights.embed.dtype
        self.cos, self.sin = rope_tables(cfg, max_len, self.device)  # [max_len, hd] float32

    def new_cache(self, initial: int = 256, keep_hidden: bool = False,
                  extra_layers: int = 0) -> KVCache:
        return KVCache(self.cfg, self.max_len, self.device, self.dtype, initial, keep_hidden,
                       extra_layers)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start: int, cache: KVCache,
                last_only: bool = False) -> torch.Tensor:
        """tokens [T] int64 at positions start..start+T-1 -> logits [T, V] float32 (or [1, V]
        for the last position when last_only). Writes K/V of these positions into `cache`, and
        their final hidden states (before the final norm) when the cache keeps them."""
        cfg, w = self.cfg, self.w
        T = tokens.shape[0]
        end = start + T
        cache.ensure(end)
        x = w.embed[tokens]  # [T, H]
        cos, sin = self.cos[start:end], self.sin[start:end]  # [T, hd]
        mask = self.mask(torch.arange(start, end, device=self.device), end)  # [T, end]
        for li, lw in enumerate(w.layers):
            x = x + self._attention(li, lw, rms_norm(x, lw.attn_norm, cfg.rms_norm_eps),
                                    cos, sin, start, cache, mask)
            x = x + self._mlp(lw, x)
        if cache.hidden is not None:
            cache.hidden[start:end] = x
        if last_only:
            x = x[-1:]
        x = rms_norm(x, w.norm, cfg.rms_norm_eps)
        return F.linear(x, w.lm_head).float()  # [T, V]

    @torch.inference_mode()
    def forward_chunk(self, tokens: torch.Tensor, pos: torch.Tensor, last: torch.Tensor,
                      cache: KVCache, keys: int) -> torch.Tensor:
        """`forward` with every shape fixed by tokens [C] and `keys` alone, nothing read back to
        the host (a CUDA graph captures it once and replays it for any start): tokens at
        positions pos [C] int64 (consecutive, on the device), attending to cache keys [0, keys)
        under the causal (and window) mask; K/V (and hidden states) of the C positions written
        with index_copy_. Returns logits [1, V] float32 of row `last` ([1] int64 on the
        device). Rows past the real tokens of a padded chunk write K/V at their positions too,
        which the positions' real tokens overwrite later before any query reads them (queries
        read keys < their own position + 1); pos must stay below keys <= the cache's capacity.
        The math is `forward`'s; the query heads of a kv group go in as rows of one attention
        call per kv head (no GQA expansion of K/V)."""
        cfg, w = self.cfg, self.w
        C, G, hd = tokens.shape[0], cfg.group_size, cfg.head_dim
        x = w.embed[tokens]  # [C, H]
        cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)  # [C, hd]
        mask = self.mask(pos, keys).repeat(G, 1)  # rows (group member, position)
        for li, lw in enumerate(w.layers):
            q, k, v = self._qkv(lw, rms_norm(x, lw.attn_norm, cfg.rms_norm_eps), cos, sin)
            cache.k[li].index_copy_(1, pos, k.transpose(0, 1))
            cache.v[li].index_copy_(1, pos, v.transpose(0, 1))
            qg = q.view(C, cfg.num_kv_heads, G, hd).permute(1, 2, 0, 3).reshape(
                cfg.num_kv_heads, G * C, hd)
            out = sdpa(qg, cache.k[li, :, :keys], cache.v[li, :, :keys], mask, False)
            out = out.view(cfg.num_kv_heads, G, C, hd).permute(2, 0, 1, 3).reshape(C, cfg.q_size)
            x = x + F.linear(out, lw.wo, lw.bo)
            x = x + self._mlp(lw, x)
        if cache.hidden is not None:
            cache.hidden.index_copy_(0, pos, x)
        x = rms_norm(x.index_select(0, last), w.norm, cfg.rms_norm_eps)
        return F.linear(x, w.lm_head).float()  # [1, V]

    def mask(self, q_pos: torch.Tensor, keys: int) -> torch.Tensor:
        return causal_mask(q_pos, keys, self.cfg.sliding_window)

    def _qkv(self, lw: LayerWeights, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed input h [T, H] -> q [T, nh, hd], k, v [T, nkv, hd]: q/k norm (Qwen3) and
        RoPE applied."""
        cfg = self.cfg
        T, hd = h.shape[0], cfg.head_dim
        q = F.linear(h, lw.wq, lw.bq).view(T, cfg.num_heads, hd)
        k = F.linear(h, lw.wk, lw.bk).view(T, cfg.num_kv_heads, hd)
        v = F.linear(h, lw.wv, lw.bv).view(T, cfg.num_kv_heads, hd)
        if lw.q_norm is not None:
            q = rms_norm(q, lw.q_norm, cfg.rms_norm_eps)
            k = rms_norm(k, lw.k_norm, cfg.rms_norm_eps)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _mlp(self, lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
        h = rms_norm(x, lw.mlp_norm, self.cfg.rms_norm_eps)
        return F.linear(F.silu(F.linear(h, lw.w_gate)) * F.linear(h, lw.w_up), lw.w_down)

    def _attention(self, li: int, lw: LayerWeights, h: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, start: int, cache: KVCache, mask: torch.Tensor
                   ) -> torch.Tensor:
        cfg = self.cfg
        T = h.shape[0]
        q, k, v = self._qkv(lw, h, cos, sin)  # [T, nh, hd], [T, nkv, hd] x 2
        end = start + T
        cache.k[li, :, start:end] = k.transpose(0, 1)
        cache.v[li, :, start:end] = v.transpose(0, 1)
        keys = cache.k[li, :, :end]  # [nkv, end, hd]
        vals = cache.v[li, :, :end]
        out = sdpa(q.transpose(0, 1), keys, vals, mask, cfg.group_size > 1)  # [nh, T, hd]
        out = out.transpose(0, 1).reshape(T, cfg.q_size)
        return F.linear(out, lw.wo, lw.bo)
