"""Model configuration: one frozen dataclass for every supported dense decoder.

Knows the HF `config.json` fields of Llama, Qwen2, Qwen3 and Mistral and how they map onto one
shape description. Knows nothing about weights, files or tokenizers (loaders fill it in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UnsupportedModelError

# HF `architectures[0]` / `model_type` -> our arch name.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MistralForCausalLM": "mistral",
}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "mistral"}
ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as HF configs state it (`rope_scaling` / `rope_parameters`)."""

    rope_type: str = "default"
    factor: float = 1.0
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | None = None
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # "llama" | "qwen2" | "qwen3" | "mistral"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # bias on q/k/v projections (Qwen2 always; Llama/Qwen3 attention_bias)
    o_bias: bool = False  # bias on the output projection (Llama/Qwen3 attention_bias)
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    sliding_window: int | None = None  # attend to at most this many past positions (Mistral)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    name: str = ""

    def __post_init__(self):
        assert self.arch in MODEL_TYPES.values(), f"unknown arch {self.arch!r}"
        assert self.num_heads % self.num_kv_heads == 0, (
            f"num_attention_heads={self.num_heads} is not a multiple of "
            f"num_key_value_heads={self.num_kv_heads}"
        )

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def param_counts(self) -> dict[str, int]:
        """Parameters by group; the LM head counts once more only when untied."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_size, self.kv_size
        per_layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h
        if self.qkv_bias:
            per_layer += q + 2 * kv
        if self.o_bias:
            per_layer += h
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        embed = self.vocab_size * h
        return {
            "embed": embed,
            "layers": per_layer * self.num_layers,
            "norm": h,
            "lm_head": 0 if self.tie_word_embeddings else embed,
        }

    @property
    def num_params(self) -> int:
        return sum(self.param_counts().values())

    def decode_weight_bytes(self, bytes_per_param: int = 2) -> int:
        """Bytes one decode step must read: every weight but the embedding table (one row is read),
        plus the LM head (which is the embedding when tied)."""
        c = self.param_counts()
        return (c["layers"] + c["norm"] + self.vocab_size * self.hidden_size) * bytes_per_param


def _get(cfg: dict[str, Any], key: str, source: str, default: Any = ...) -> Any:
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    if default is ...:
        raise UnsupportedModelError(f"{source}: required field {key!r} is missing")
    return default


def rope_scaling_from_hf(cfg: dict[str, Any], source: str) -> tuple[float, RopeScaling]:
    """(rope_theta, scaling) from an HF config: `rope_scaling` (transformers 4) or
    `rope_parameters` (transformers 5, which also holds rope_theta)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    merged = {**params, **scaling}
    theta = float(merged.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise UnsupportedModelError(
            f"{source}: rope_scaling.rope_type={rope_type!r} is not supported "
            f"(supported: {', '.join(ROPE_TYPES)})"
        )
    known = set(RopeScaling.__dataclass_fields__) - {"rope_type"}
    kwargs = {k: merged[k] for k in known if merged.get(k) is not None}
    return theta, RopeScaling(rope_type=rope_type, **kwargs)


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Build a ModelConfig from a parsed HF `config.json`; `source` names the file in errors."""
    archs = cfg.get("architectures") or []
    arch = None
    for a in archs:
        arch = ARCHITECTURES.get(a)
        if arch:
            break
    if arch is None:
        arch = MODEL_TYPES.get(cfg.get("model_type", ""))
    if arch is None:
        names = archs or [cfg.get("model_type")]
        raise UnsupportedModelError(
            f"{source}: architecture {names[0]!r} is not supported "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    num_heads = int(_get(cfg, "num_attention_heads", source))
    hidden = int(_get(cfg, "hidden_size", source))
    theta, scaling = rope_scaling_from_hf(cfg, source)
    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    sliding = cfg.get("sliding_window")
    if arch in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
        sliding = None
    if arch == "llama" and cfg.get("mlp_bias"):
        raise UnsupportedModelError(f"{source}: mlp_bias=true is not supported")
    attn_bias = bool(cfg.get("attention_bias", False))
    return ModelConfig(
        arch=arch,
        vocab_size=int(_get(cfg, "vocab_size", source)),
        hidden_size=hidden,
        intermediate_size=int(_get(cfg, "intermediate_size", source)),
        num_layers=int(_get(cfg, "num_hidden_layers", source)),
        num_heads=num_heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", source, num_heads)),
        head_dim=int(_get(cfg, "head_dim", source, hidden // num_heads)),
        rms_norm_eps=float(_get(cfg, "rms_norm_eps", source, 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", source, 4096)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=arch == "qwen2" or (attn_bias and arch != "mistral"),
        o_bias=attn_bias and arch in ("llama", "qwen3"),
        qk_norm=arch == "qwen3",
        sliding_window=int(sliding) if sliding else None,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=eos_ids,
        name=cfg.get("_name_or_path", ""),
    )
