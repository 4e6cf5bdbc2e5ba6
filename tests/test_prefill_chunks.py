"""Chunked prefill (engine/backends/prefill.py): Transformer.forward_chunk, the static-shape
forward the CUDA graphs capture, run here eagerly through ChunkGraphs(capture=False) on CPU and
compared with the reference forward: logits, K/V and hidden states of two turns of a session,
chunks padded, several chunk sizes and key buckets, GQA, q/k norm, biases, sliding window."""

from __future__ import annotations

import pytest
import torch
from tiny_models import check_prefill_turns, random_weights

from agentfast.engine.backends.prefill import MIN_KEYS, ChunkGraphs
from agentfast.engine.config import ModelConfig
from agentfast.engine.model import KVCache, Transformer, build_weights

BASE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=1024)
CONFIGS = {
    "llama_gqa": dict(arch="llama"),
    "qwen3_qknorm_bias": dict(arch="qwen3", qk_norm=True, qkv_bias=True, o_bias=True,
                              num_kv_heads=1),
    "mistral_window": dict(arch="mistral", sliding_window=7, num_heads=2, num_kv_heads=2),
}


def model(name: str) -> Transformer:
    cfg = ModelConfig(**{**BASE, **CONFIGS[name]})
    return Transformer(cfg, build_weights(cfg, random_weights(cfg), "cpu", torch.float32), 1024)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("turns", [(300, 20), (5, 70, 1)])
def test_chunks_equal_the_reference_forward(name, turns):
    """Turns of a session prefilled in chunks (300 = 256 + 44 padded to 64; 70 = 64 + 6 padded
    to 16; 1 token padded to 16) against one eager forward per turn: last-token logits, and the
    K/V and hidden states of every valid position."""
    m = model(name)
    got = KVCache(m.cfg, 1024, "cpu", torch.float32, initial=1024, keep_hidden=True)
    check_prefill_turns(m, ChunkGraphs(m, got, capture=False), turns, 2e-5)


def test_plan_chunks_and_key_buckets():
    """Largest chunks while more than 256 tokens remain, then the smallest chunk that holds the
    rest; keys: a power of two >= the chunk's end, at least MIN_KEYS, at most the capacity;
    declined (eager prefill) when a padded chunk would reach past the capacity."""
    assert ChunkGraphs.plan(300, 0, 4096) == [(256, 256, 256), (44, 64, 512)]
    assert ChunkGraphs.plan(1, 700, 4096) == [(1, 16, 1024)]
    assert ChunkGraphs.plan(16, 0, 4096) == [(16, 16, MIN_KEYS)]
    assert ChunkGraphs.plan(17, 0, 4096) == [(17, 64, MIN_KEYS)]
    assert ChunkGraphs.plan(10, 500, 600) == [(10, 16, 600)]
    assert ChunkGraphs.plan(10, 590, 600) is None  # 590 + 16 > 600
    assert ChunkGraphs.plan(0, 0, 600) == []
