"""Shared fixtures: tiny random checkpoints per architecture (written once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# `python -m pytest` puts the repo root on sys.path, where the folder kernels/ (installed as
# agentfast.kernels) shadows the `kernels` distribution that transformers >= 5.25 imports (HF
# hub kernels): "cannot import name 'CUDAProperties' from 'kernels'". The package is installed
# (pip install -e .), so the root is not needed there.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]
if getattr(sys.modules.get("kernels"), "__file__", None) == str(_ROOT / "kernels" / "__init__.py"):
    del sys.modules["kernels"]

from tiny_models import make_checkpoint  # noqa: E402

# (name, arch, config overrides): every architecture and every RoPE scaling the loader accepts.
VARIANTS = [
    ("llama", "llama", {}),
    ("llama_tied_llama3rope", "llama", {
        "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    ("llama_bias_linearrope", "llama", {"attention_bias": True,
                                        "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ("qwen2", "qwen2", {}),
    ("qwen2_yarn", "qwen2", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                              "original_max_position_embeddings": 128}}),
    ("qwen3", "qwen3", {}),
    ("qwen3_tied_hd64_mha", "qwen3", {"tie_word_embeddings": True, "head_dim": 64,
                                      "num_key_value_heads": 4}),
    ("mistral_window", "mistral", {"sliding_window": 16}),
]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {name: make_checkpoint(root / name, arch, seed=i, **over)
            for i, (name, arch, over) in enumerate(VARIANTS)}


@pytest.fixture(scope="session")
def llama_dir(checkpoints) -> Path:
    return checkpoints["llama"]


@pytest.fixture(scope="module")
def tiny(llama_dir):
    """An engine on the tiny random Llama checkpoint (CPU)."""
    from agentfast.engine import Engine

    return Engine.load(str(llama_dir), device="cpu")


@pytest.fixture(scope="module")
def smol():
    """An engine on the embedded SmolLM2 (CPU); skips where the package is absent."""
    from agentfast.engine import Engine, ModelLoadError

    try:
        return Engine.load(device="cpu")
    except ModelLoadError as e:
        pytest.skip(f"embedded model: {e}")
