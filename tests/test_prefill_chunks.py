"""Chunked prefill (engine/backends/prefill.py): Transformer.forward_chunk, the static-shape
forward the CUDA graphs capture, run here eagerly through ChunkGraphs(capture=False) on CPU and
compared with the reference forward: logits, K/V and hidden states of two turns of a session,
chunks padded, several chunk sizes and key buckets, GQA, q/k norm, biases, sliding window."""

from __future__ import annotations

import math

import pytest
import torch

from agentfast.engine.backends.prefill import MIN_KEYS, ChunkGraphs
from agentfast.engine.config import ModelConfig
from agentfast.engine.model import KVCache, Transformer, build_weights, expected_shapes

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
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in expected_shapes(cfg).items():
        t = torch.randn(shape, generator=g)
        sd[k] = 1 + 0.1 * t if k.endswith("norm.weight") else t / math.sqrt(shape[-1])
    return Transformer(cfg, build_weights(cfg, sd, "cpu", torch.float32), 1024)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("turns", [(300, 20), (5, 70, 1)])
def test_chunks_equal_the_reference_forward(name, turns):
    """Turns of a session prefilled in chunks (300 = 256 + 44 padded to 64; 70 = 64 + 6 padded
    to 16; 1 token padded to 16) against one eager forward per turn: last-token logits, and the
    K/V and hidden states of every valid position."""
    m = model(name)
    ref = KVCache(m.cfg, 1024, "cpu", torch.float32, initial=1024, keep_hidden=True)
    got = KVCache(m.cfg, 1024, "cpu", torch.float32, initial=1024, keep_hidden=True)
    chunks = ChunkGraphs(m, got, capture=False)
    ids = torch.randint(0, m.cfg.vocab_size, (sum(turns),), generator=torch.Generator()
                        .manual_seed(1)).tolist()
    at = 0
    for n in turns:
        want = m.forward(torch.tensor(ids[at:at + n]), at, ref, last_only=True)[0]
        have = chunks.prefill(ids[at:at + n], at)[0]
        torch.testing.assert_close(have, want, atol=2e-5, rtol=2e-5)
        at += n
        torch.testing.assert_close(got.k[:, :, :at], ref.k[:, :, :at], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(got.v[:, :, :at], ref.v[:, :, :at], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(got.hidden[:at], ref.hidden[:at], atol=2e-5, rtol=2e-5)


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
