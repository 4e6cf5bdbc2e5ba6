"""Reference backend against transformers, per architecture: logits and 64 greedy tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANTS
from tiny_models import hf_model

from agentfast.engine import Engine, SamplingParams

PROMPT = "The capital of France is Paris. def add(a, b):\n    return a + b"


@pytest.mark.parametrize("name", [v[0] for v in VARIANTS])
def test_logits_and_greedy_match_transformers(checkpoints, name):
    folder = checkpoints[name]
    eng = Engine.load(str(folder), device="cpu", dtype=torch.float32)
    hf = hf_model(folder)
    ids = eng.tokenizer.encode(PROMPT * 2)
    assert len(ids) > 40
    ours = eng.backend.logits(eng.backend.new_cache(), ids, 0)  # [T, V]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4

    # 64 greedy steps, EOS ignored on both sides.
    res = eng.generate(ids, SamplingParams(max_tokens=64, ignore_eos=True))
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64,
                          do_sample=False, pad_token_id=0)
    assert res.token_ids == out[0, len(ids):].tolist()
    assert res.finish_reason == "length"


def test_prefill_in_chunks_equals_one_pass(checkpoints):
    """Logits do not depend on how the prompt is split into forward calls (KV cache path)."""
    eng = Engine.load(str(checkpoints["qwen3"]), device="cpu")
    ids = eng.tokenizer.encode(PROMPT)
    whole = eng.backend.logits(eng.backend.new_cache(), ids, 0)
    cache = eng.backend.new_cache()
    parts = [eng.backend.logits(cache, ids[:7], 0), eng.backend.logits(cache, ids[7:8], 7),
             eng.backend.logits(cache, ids[8:], 8)]
    torch.testing.assert_close(torch.cat(parts), whole, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoint_loads_like_single(tmp_path, checkpoints):
    """A checkpoint saved in several shards (with the index file) gives the same logits."""
    from tiny_models import hf_model, write_tokenizer

    src = checkpoints["qwen2"]
    sharded = tmp_path / "sharded"
    hf_model(src).save_pretrained(sharded, max_shard_size="100KB")
    write_tokenizer(sharded)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    a, b = Engine.load(str(src), device="cpu"), Engine.load(str(sharded), device="cpu")
    ids = a.tokenizer.encode(PROMPT)
    torch.testing.assert_close(a.backend.logits(a.backend.new_cache(), ids, 0),
                               b.backend.logits(b.backend.new_cache(), ids, 0))


def test_sdpa_helper_is_masked_attention():
    """engine.model.sdpa (the reference forward's and the MTP module's attention, cuDNN
    excluded) is softmax(q k^T / sqrt(d)) v over the keys its boolean mask allows, GQA
    included."""
    import math

    from agentfast.engine.model import sdpa

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 3, 8, generator=g)
    k = torch.randn(1, 2, 5, 8, generator=g)
    v = torch.randn(1, 2, 5, 8, generator=g)
    mask = torch.rand(1, 1, 3, 5, generator=g) > 0.4
    mask[..., 0] = True
    out = sdpa(q, k, v, mask, True)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    s = (q @ kk.transpose(-1, -2)) / math.sqrt(8)
    want = torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ vv
    assert torch.allclose(out, want, atol=1e-5)
