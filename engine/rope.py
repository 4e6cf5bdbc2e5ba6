"""Rotary position embedding tables, with the scalings HF configs name (linear, llama3, yarn).

Produces cos/sin tables [positions, head_dim] in float32 in the HF "rotate_half" convention
(frequencies repeated twice along head_dim). Knows nothing about attention or weights.
"""

from __future__ import annotations

import math

import torch

from .config import ModelConfig


def inv_freq_and_scale(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] float32, attention_factor applied to cos and sin)."""
    dim, base, rs = cfg.head_dim, cfg.rope_theta, cfg.rope_scaling
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rs.rope_type == "default":
        return inv_freq, 1.0
    if rs.rope_type == "linear":
        return inv_freq / rs.factor, 1.0
    if rs.rope_type == "llama3":
        return _llama3(inv_freq, rs.factor, rs.low_freq_factor, rs.high_freq_factor,
                       rs.original_max_position_embeddings or cfg.max_position_embeddings), 1.0
    if rs.rope_type == "yarn":
        return _yarn(cfg, dim, base)
    raise AssertionError(f"rope_type {rs.rope_type!r} reached the table builder")


def _llama3(inv_freq: torch.Tensor, factor: float, low: float, high: float,
            old_ctx: int) -> torch.Tensor:
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(cfg: ModelConfig, dim: int, base: float) -> tuple[torch.Tensor, float]:
    rs = cfg.rope_scaling
    factor = rs.factor
    orig = rs.original_max_position_embeddings or cfg.max_position_embeddings

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn = rs.attention_factor
    if attn is None:
        if rs.mscale and rs.mscale_all_dim:
            attn = mscale(factor, rs.mscale) / mscale(factor, rs.mscale_all_dim)
        else:
            attn = mscale(factor)

    def correction_dim(rot: float) -> float:
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    lo, hi = correction_dim(rs.beta_fast), correction_dim(rs.beta_slow)
    if rs.truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrap, interp = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # share of the extrapolated (unscaled) frequency
    return interp * (1 - keep) + extrap * keep, float(attn)


def rope_tables(cfg: ModelConfig, n_pos: int, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [n_pos, head_dim] float32 (already multiplied by the attention factor)."""
    inv_freq, scale = inv_freq_and_scale(cfg)
    t = torch.arange(n_pos, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # [n_pos, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [n_pos, hd]
    return (emb.cos() * scale).to(device), (emb.sin() * scale).to(device)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, hd]; cos/sin: [T, hd] float32. Math in float32 like HF, result in x.dtype."""
    c, s = cos[:, None, :], sin[:, None, :]
    xf = x.float()
    return (xf * c + rotate_half(xf) * s).to(x.dtype)
