"""The CUDA-graph prefill's FusedChunk (engine/backends/prefill.py) run eagerly in the Triton
interpreter (its kernels: RMSNorm, rope_append_rows, silu_mul) against the reference forward,
fp32: two turns of a session in padded chunks, with the graph backend's concatenated q/k/v and
gate/up weights (one GEMM each) and with separate ones. (fp32 only: the interpreter rounds
fp32 -> bf16 toward zero (triton 3.9, the CPU install of CI), so its bf16 results are
biased where the GPU's are not.)"""

from __future__ import annotations

import pytest
import torch
from kernel_utils import INTERPRET, interpreted
from tiny_models import check_prefill_turns, random_weights

from agentfast.engine.backends.graph import fuse_weights
from agentfast.engine.backends.prefill import ChunkGraphs, FusedChunk
from agentfast.engine.config import ModelConfig
from agentfast.engine.model import KVCache, Transformer, build_weights

# CPU tensors through the interpreter (on a GPU machine the graph backend's GPU tests cover it)
pytestmark = [interpreted, pytest.mark.skipif(not INTERPRET, reason="TRITON_INTERPRET=1 only")]

BASE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=512)


@pytest.mark.parametrize("over,fused", [
    (dict(arch="llama"), True),
    (dict(arch="qwen3", qk_norm=True, qkv_bias=True, num_kv_heads=1), True),
    (dict(arch="mistral", sliding_window=7), False),
])
def test_fused_chunk_equals_forward(over, fused):
    cfg = ModelConfig(**{**BASE, **over})
    w = build_weights(cfg, random_weights(cfg), "cpu", torch.float32)
    if fused:
        fuse_weights(cfg, w)  # q/k/v and gate/up become views of one tensor each
    m = Transformer(cfg, w, 512)
    fc = FusedChunk(m)
    assert all((qkv is not None) == fused and (gu is not None) == fused
               for _, qkv, _, gu in fc.layers)
    got = KVCache(cfg, 512, "cpu", torch.float32, initial=512, keep_hidden=True)
    # 70 = 64 + 6 padded to 16; 20 padded to 64
    check_prefill_turns(m, ChunkGraphs(m, got, capture=False, fused=fc), (70, 20), 1e-4)
