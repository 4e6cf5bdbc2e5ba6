"""Random-weight models at the real shapes of the models the benchmark reports.

Speed does not depend on weight values, but never time zeros: weights are Gaussian, built on the
target device so an 8B model costs no host memory. Knows shapes, not backends.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig, RopeScaling
from ..model import expected_shapes

SHAPES: dict[str, ModelConfig] = {
    "smollm2-135m": ModelConfig(
        arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
        num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
        max_position_embeddings=8192, tie_word_embeddings=True, name="SmolLM2-135M"),
    "llama-3.2-1b": ModelConfig(
        arch="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", factor=32.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=8192),
        max_position_embeddings=131072, tie_word_embeddings=True, name="Llama-3.2-1B"),
    "qwen3-1.7b": ModelConfig(
        arch="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28,
        num_heads=16, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=40960, tie_word_embeddings=True, qk_norm=True,
        name="Qwen3-1.7B"),
    "qwen3-8b": ModelConfig(
        arch="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_layers=36,
        num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=40960, tie_word_embeddings=False, qk_norm=True,
        name="Qwen3-8B"),
}


def random_weights(cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """HF-named Gaussian weights: matrices N(0, 0.02), embedding N(0, 1) scaled so logits are
    spread (fewer bf16 near-ties in greedy comparisons), norms 1 + N(0, 0.05)."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(cfg).items():
        t = torch.empty(shape, device=device, dtype=dtype)
        if len(shape) == 1:
            std, mean = (0.05, 1.0) if "norm" in name else (0.02, 0.0)
        elif "embed_tokens" in name or "lm_head" in name:
            std, mean = 0.05, 0.0
        else:
            std, mean = 0.02, 0.0
        t.normal_(mean, std, generator=g)
        out[name] = t
    return out


def weight_bytes(cfg: ModelConfig, bytes_per_param: int = 2) -> int:
    return cfg.decode_weight_bytes(bytes_per_param)
