"""The CUDA-graph backend against the reference backend (GPU tests run on the device machine)."""

from __future__ import annotations

import os

import pytest
import torch

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.errors import RequestError

# Kernels are compiled for the GPU only when Triton's CPU interpreter is off (tests/kernels turn it
# on for CPU runs): on a GPU machine run `TRITON_INTERPRET=0 python -m pytest -m gpu`.
cuda = pytest.mark.skipif(not torch.cuda.is_available()
                          or os.environ.get("TRITON_INTERPRET", "0") == "1",
                          reason="needs a CUDA GPU and TRITON_INTERPRET=0")

# The graph kernels take head_dim 64 or 128: checkpoints of their own, every architecture.
GPU_VARIANTS = {
    "llama": ("llama", {"hidden_size": 256, "num_attention_heads": 4}),
    "qwen2": ("qwen2", {"hidden_size": 256, "num_attention_heads": 4}),
    "qwen3_tied_hd128": ("qwen3", {"head_dim": 128, "tie_word_embeddings": True}),
    "mistral_window": ("mistral", {"hidden_size": 256, "num_attention_heads": 4,
                                   "sliding_window": 16}),
    "llama_bias_llama3rope": ("llama", {
        "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
        "attention_bias": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
}


@pytest.fixture(scope="module")
def gpu_checkpoints(tmp_path_factory):
    from tiny_models import make_checkpoint

    root = tmp_path_factory.mktemp("gpu_ckpt")
    return {name: make_checkpoint(root / name, arch, seed=i, **over)
            for i, (name, (arch, over)) in enumerate(GPU_VARIANTS.items())}


def test_graph_backend_needs_cuda(llama_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the refusal path is for CPU machines")
    with pytest.raises(RequestError, match="CUDA"):
        Engine.load(str(llama_dir), backend="graph", device="cpu")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", list(GPU_VARIANTS))
def test_graph_greedy_equals_reference_fp32(gpu_checkpoints, name):
    folder = str(gpu_checkpoints[name])
    ref = Engine.load(folder, backend="reference", device="cuda", dtype=torch.float32)
    fast = Engine.load(folder, backend="graph", device="cuda", dtype=torch.float32)
    ids = ref.tokenizer.encode("The capital of France is Paris. def add(a, b): return a + b")
    p = SamplingParams(max_tokens=200, ignore_eos=True)
    assert fast.generate(ids, p).token_ids == ref.generate(ids, p).token_ids


@pytest.mark.gpu
@cuda
def test_graph_sessions_sampling_and_stops(gpu_checkpoints):
    folder = str(gpu_checkpoints["llama"])
    eng = Engine.load(folder, backend="graph", device="cuda", dtype=torch.float32)
    ref = Engine.load(folder, backend="reference", device="cuda", dtype=torch.float32)
    ids = eng.tokenizer.encode("Agents call tools, read files")
    p = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.9, top_k=40, seed=3,
                       ignore_eos=True)
    a, b = eng.generate(ids, p), eng.generate(ids, p)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
    c = eng.generate(ids, SamplingParams(max_tokens=24, temperature=1.0, seed=4, ignore_eos=True))
    assert c.token_ids != a.token_ids
    g = SamplingParams(max_tokens=16, ignore_eos=True)
    first = eng.generate(ids, g, session="s")
    warm = eng.generate(ids + first.token_ids[:5] + ids[:3], g, session="s")
    assert warm.reused_tokens == len(ids) + 5
    assert warm.token_ids == ref.generate(ids + first.token_ids[:5] + ids[:3], g).token_ids
    stop_tok = first.token_ids[6]
    r = eng.generate(ids, SamplingParams(max_tokens=16, stop_token_ids=(stop_tok,),
                                         ignore_eos=True))
    assert r.token_ids == first.token_ids[: first.token_ids.index(stop_tok)]


@pytest.mark.gpu
@cuda
def test_graph_embedded_model_answers():
    from agentfast.engine.errors import ModelLoadError
    from agentfast.engine.loaders import embedded_model_path

    try:
        embedded_model_path()
    except ModelLoadError as e:
        pytest.skip(str(e))
    eng = Engine.load(None, backend="graph", device="cuda")
    r = eng.chat([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.text


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_graph_constrained_equals_reference(gpu_checkpoints, temperature):
    import json

    import jsonschema

    from agentfast.engine.constraints import json_schema

    # Every string of this schema is short, so even a random model completes it.
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                               "ok": {"type": "boolean"}},
              "required": ["color", "ok"], "additionalProperties": False}
    folder = str(gpu_checkpoints["qwen3_tied_hd128"])
    fast = Engine.load(folder, backend="graph", device="cuda", dtype=torch.float32)
    ref = Engine.load(folder, backend="reference", device="cuda", dtype=torch.float32)
    ids = fast.tokenizer.encode("Give me a person as JSON:")
    p = SamplingParams(max_tokens=120, temperature=temperature, seed=5,
                       constraint=json_schema(schema))
    out = fast.generate(ids, p)
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), schema)
    if temperature == 0.0:
        assert out.token_ids == ref.generate(ids, p).token_ids


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", ["llama", "qwen3_tied_hd128", "mistral_window"])
def test_graph_prefill_equals_eager(gpu_checkpoints, name):
    """The fast backends' CUDA-graph prefill (prefill.ChunkGraphs running FusedChunk: chunks
    of 16 / 64 / 256 positions, one graph per chunk size, replayed) against the same backend's
    eager prefill, fp32: two turns of a session (300 tokens, then 21 at position 300),
    last-token logits and the K/V written."""
    eng = Engine.load(str(gpu_checkpoints[name]), backend="graph", device="cuda",
                      dtype=torch.float32)
    be = eng.backend
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, eng.config.vocab_size, (321,), generator=g).tolist()
    a, b = be.new_cache(), be.new_cache()
    for lo, hi in ((0, 300), (300, 321)):
        be.graph_prefill = True
        have = be.prefill(a, ids[lo:hi], lo)
        be.graph_prefill = False
        want = be.prefill(b, ids[lo:hi], lo)
        torch.testing.assert_close(have, want, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(a.k[:, :, :hi], b.k[:, :, :hi], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.v[:, :, :hi], b.v[:, :, :hi], atol=1e-4, rtol=1e-4)
    # one graph per chunk size (cap 512), every size captured at the cache's first prefill
    # (ChunkGraphs.capture_all: writes at the cache's last positions, which the checks above
    # do not read and no sequence here reaches)
    assert sorted(be._graphs()[a].graphs) == [(16, 512), (64, 512), (256, 512)]
