"""GGUF loader: one llama.cpp `.gguf` file -> config, float32 weights under HF names, tokenizer.

Knows the dense decoders `llama` (Mistral GGUFs say `llama` too), `mistral`, `qwen2`, `qwen3`;
tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (dequantized by
`gguf.quants`). For `llama` it undoes the row permutation llama.cpp's converter applies to q/k
projections (as transformers does). Llama 3 RoPE scaling, which GGUF bakes into a
`rope_freqs.weight` tensor, is mapped back to `RopeScaling("llama3", ...)` when the tensor matches
the llama3 formula with low/high_freq_factor 1/4 and the original context (metadata, else 8192);
any other `rope_freqs` is rejected. Does not know MoE, partial rotary, other architectures or
types; those raise UnsupportedModelError. Unreadable or truncated files raise ModelLoadError.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as T

from ..config import ModelConfig, RopeScaling
from ..errors import ModelLoadError, UnsupportedModelError
from ..model import expected_shapes
from . import LoadedModel, Progress
from .gguf_tokenizer import field_value, tokenizer_from_gguf

ARCHS = ("llama", "mistral", "qwen2", "qwen3")
# llama.cpp's converter permutes q/k rows for `llama` (which Mistral files also say). llama.cpp has
# no `mistral` arch; a file that says so is read unpermuted, as transformers reads it.
PERMUTED_ARCHS = ("llama",)
TYPES = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K)
ROPE_TYPES = {"none": "default", "linear": "linear", "yarn": "yarn"}

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLK = re.compile(r"blk\.(\d+)\.(.+)$")


def hf_name(name: str, source: str) -> str:
    """The HF parameter name of a GGUF tensor name; unknown names raise UnsupportedModelError."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLK.fullmatch(name)
    if m and m.group(2) in _LAYER:
        return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}"
    raise UnsupportedModelError(f"{source}: tensor {name!r} is not supported (no HF equivalent)")


def _open(path: Path) -> gguf.GGUFReader:
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 (numpy/struct errors from a corrupt or cut file)
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ModelLoadError(f"{path}: not a readable GGUF file, corrupt or truncated ({msg})"
                             ) from None


def _llama3_rope(freqs: np.ndarray, dim: int, theta: float, orig: int) -> RopeScaling | None:
    """RopeScaling("llama3") whose factors reproduce `freqs` (llama.cpp's rope_freqs), or None."""
    factor = float(freqs.max())
    low, high = 1.0, 4.0
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    want = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < orig / high:
            want.append(1.0)
        elif wavelen > orig / low:
            want.append(factor)
        else:
            s = (orig / wavelen - low) / (high - low)
            want.append(1 / ((1 - s) / factor + s))
    if len(want) != freqs.size or not np.allclose(freqs, want, rtol=1e-4, atol=1e-6):
        return None
    return RopeScaling(rope_type="llama3", factor=factor, low_freq_factor=low,
                       high_freq_factor=high, original_max_position_embeddings=orig)


def _arch(r: gguf.GGUFReader, src: str) -> str:
    arch = field_value(r, "general.architecture")
    if arch not in ARCHS:
        raise UnsupportedModelError(f"{src}: architecture {arch!r} (general.architecture) is not "
                                    f"supported (supported: {', '.join(ARCHS)})")
    return arch


def _config(r: gguf.GGUFReader, src: str, names: set[str], vocab: int) -> ModelConfig:
    arch = _arch(r, src)

    def get(key: str, default=...):
        v = field_value(r, f"{arch}.{key}")
        if v is None:
            if default is ...:
                raise ModelLoadError(f"{src}: metadata key {arch}.{key} is missing")
            return default
        return v

    name = str(field_value(r, "general.name", "") or "")
    if arch == "llama" and "mistral" in name.lower():
        arch_name = "mistral"
    else:
        arch_name = arch
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise UnsupportedModelError(f"{src}: {arch}.attention.value_length != key_length")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedModelError(f"{src}: {arch}.rope.dimension_count != head_dim "
                                    f"(partial rotary embeddings are not supported)")
    theta = float(get("rope.freq_base", 10000.0))
    ctx = int(get("context_length", 4096))
    rope_type = str(get("rope.scaling.type", "none"))
    if rope_type not in ROPE_TYPES:
        raise UnsupportedModelError(f"{src}: {arch}.rope.scaling.type={rope_type!r} is not "
                                    f"supported (supported: {', '.join(ROPE_TYPES)})")
    orig = get("rope.scaling.original_context_length", None)
    kw = {"factor": float(get("rope.scaling.factor", 1.0))}
    if orig is not None:
        kw["original_max_position_embeddings"] = int(orig)
    for k in ("beta_fast", "beta_slow"):
        if (v := get(f"rope.scaling.yarn_{k}", None)) is not None:
            kw[k] = float(v)
    scaling = RopeScaling(rope_type=ROPE_TYPES[rope_type], **kw)
    if "rope_freqs.weight" in names:
        t = next(t for t in r.tensors if t.name == "rope_freqs.weight")
        freqs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float64)
        found = _llama3_rope(freqs, head_dim, theta, int(orig or 8192))
        if found is None or rope_type != "none":
            raise UnsupportedModelError(f"{src}: tensor 'rope_freqs.weight' does not match "
                                        f"Llama 3 RoPE scaling; custom RoPE factors are not "
                                        f"supported")
        scaling = found
    heads_kv = get("attention.head_count_kv", heads)
    if isinstance(heads_kv, list):
        raise UnsupportedModelError(f"{src}: per-layer {arch}.attention.head_count_kv")
    window = get("attention.sliding_window", None)
    eos = [field_value(r, f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    return ModelConfig(
        arch=arch_name,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(heads_kv),
        head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=ctx,
        tie_word_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        o_bias="blk.0.attn_output.bias" in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
        sliding_window=int(window) if window else None,
        bos_token_id=field_value(r, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos if e is not None)),
        name=name,
    )


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (rows of each head: interleaved pairs -> halves)."""
    rest = w.shape[1:]
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *rest).transpose(1, 2).reshape(w.shape)


def load_gguf(path: Path, progress: Progress | None = None) -> LoadedModel:
    """Load a GGUF file: metadata -> ModelConfig, tensors dequantized to float32 under HF names,
    tokenizer from the metadata."""
    path = Path(path)
    src = str(path)
    r = _open(path)
    size = path.stat().st_size
    arch = _arch(r, src)
    names = {t.name for t in r.tensors}
    for t in r.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelLoadError(f"{src}: tensor {t.name!r} lies past the end of the file "
                                 f"(truncated?)")
    tokenizer = tokenizer_from_gguf(r, src)
    n_tokens = len(r.fields["tokenizer.ggml.tokens"].data)
    config = _config(r, src, names, n_tokens)
    expected = expected_shapes(config)
    tensors = [t for t in r.tensors if t.name != "rope_freqs.weight"]
    hf = {t.name: hf_name(t.name, src) for t in tensors}
    for t in tensors:
        if hf[t.name] not in expected:
            raise UnsupportedModelError(f"{src}: tensor {t.name!r} is not used by a "
                                        f"{config.arch} model with this config")
    missing = set(expected) - set(hf.values())
    if missing:
        raise ModelLoadError(f"{src}: tensor {min(missing)!r} is missing "
                             f"({len(missing)} missing in all)")
    permuted = arch in PERMUTED_ARCHS
    weights: dict[str, torch.Tensor] = {}
    for done, t in enumerate(tensors, 1):
        if t.tensor_type not in TYPES:
            raise UnsupportedModelError(
                f"{src}: tensor {t.name!r} has type {t.tensor_type.name}, which is not supported "
                f"(supported: {', '.join(x.name for x in TYPES)})")
        name, shape = hf[t.name], tuple(int(x) for x in reversed(t.shape))
        if shape != expected[name]:
            raise ModelLoadError(f"{src}: tensor {t.name!r} has shape {list(shape)}, expected "
                                 f"{list(expected[name])} from the metadata")
        try:
            w = gguf.quants.dequantize(t.data.view(np.ndarray), t.tensor_type)
        except Exception as e:  # noqa: BLE001 (numpy errors from malformed blocks)
            raise ModelLoadError(f"{src}: tensor {t.name!r} cannot be dequantized ({e})") from None
        if t.tensor_type == T.F32:
            w = w.copy()  # a view of the memory-mapped file
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).reshape(shape)
        if permuted and ".attn_q." in t.name:
            w = unpermute(w, config.num_heads)
        elif permuted and ".attn_k." in t.name:
            w = unpermute(w, config.num_kv_heads)
        weights[name] = w.contiguous()
        if progress is not None:
            progress(done, len(tensors))
    return LoadedModel(config=config, weights=weights, tokenizer=tokenizer, source=path,
                       file_bytes=size)
