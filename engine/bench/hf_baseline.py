"""HF transformers at batch 1, the baseline beside our backends, on the same weights.

Two ways a user runs it: eager with a dynamic cache, and a static cache with the decode step
compiled by torch.compile (mode reduce-overhead: CUDA graphs), called in a Python loop as
gpt-fast does. transformers is imported only here (the benchmark), never by the engine.
"""

from __future__ import annotations

import time

import torch

from ..config import ModelConfig


def hf_config(cfg: ModelConfig, max_len: int):
    import transformers as tf

    rope = {"rope_type": cfg.rope_scaling.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling.rope_type == "llama3":
        rs = cfg.rope_scaling
        rope.update(factor=rs.factor, low_freq_factor=rs.low_freq_factor,
                    high_freq_factor=rs.high_freq_factor,
                    original_max_position_embeddings=rs.original_max_position_embeddings)
    kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
              intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
              head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
              max_position_embeddings=max(max_len, cfg.max_position_embeddings),
              tie_word_embeddings=cfg.tie_word_embeddings, rope_theta=cfg.rope_theta,
              rope_scaling=None if rope["rope_type"] == "default" else rope)
    cls = {"llama": tf.LlamaConfig, "qwen3": tf.Qwen3Config, "qwen2": tf.Qwen2Config,
           "mistral": tf.MistralConfig}[cfg.arch]
    return cls(**kw)


def hf_model(cfg: ModelConfig, weights: dict[str, torch.Tensor], max_len: int):
    """An HF model whose parameters are the given tensors (shared, not copied)."""
    import transformers as tf

    dev, dtype = next(iter(weights.values())).device, next(iter(weights.values())).dtype
    hcfg = hf_config(cfg, max_len)
    with torch.device(dev):  # buffers (RoPE tables) built on the device; parameters replaced
        m = tf.AutoModelForCausalLM.from_config(hcfg, dtype=dtype)
    sd = dict(weights)
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    m.load_state_dict(sd, assign=True, strict=True)
    if cfg.tie_word_embeddings:
        m.tie_weights()
    return m.to(dev).eval()


@torch.inference_mode()
def time_eager(model, prompt: torch.Tensor, steps: int) -> float:
    """Seconds per decoded token, eager, DynamicCache, reading each token on the host."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=prompt[None], past_key_values=cache, use_cache=True)
    tok = out.logits[:, -1:].argmax(-1)
    for _ in range(2):
        tok = model(input_ids=tok, past_key_values=cache, use_cache=True).logits.argmax(-1)
    _sync(prompt.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = model(input_ids=tok, past_key_values=cache, use_cache=True).logits.argmax(-1)
        int(tok)
    return (time.perf_counter() - t0) / steps


class CompiledStep:
    """StaticCache + torch.compile(mode='reduce-overhead') decode step, compiled once per model
    and reused at every context length (positions are tensors, shapes are static)."""

    def __init__(self, model, max_len: int):
        from transformers import StaticCache

        self.model = model
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self.step = torch.compile(self._step, mode="reduce-overhead", fullgraph=True)

    def _step(self, tok, pos):
        out = self.model(input_ids=tok, position_ids=pos.view(1, 1), cache_position=pos,
                         past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1:].argmax(-1)

    @torch.inference_mode()
    def time(self, prompt: torch.Tensor, steps: int) -> float:
        self.cache.reset()
        dev = prompt.device
        P = prompt.shape[0]
        # Prefill in chunks (uncompiled), then decode with the compiled step.
        for s in range(0, P, 1024):
            chunk = prompt[s:s + 1024]
            logits = self.model(input_ids=chunk[None], cache_position=torch.arange(
                s, s + chunk.shape[0], device=dev), past_key_values=self.cache,
                use_cache=True).logits
        tok = logits[:, -1:].argmax(-1)
        for i in range(3):  # compile on first use; later warm-ups replay the graph
            tok = self.step(tok, torch.tensor([P + i], device=dev)).clone()
        _sync(dev)
        t0 = time.perf_counter()
        for i in range(steps):
            tok = self.step(tok, torch.tensor([P + 3 + i], device=dev)).clone()
            int(tok)
        return (time.perf_counter() - t0) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
