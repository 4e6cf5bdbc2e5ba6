"""HF checkpoint folders: config.json, single or sharded *.safetensors, tokenizer files.

Knows the file layout of a `save_pretrained` folder; knows nothing about how the weights are
used. Every failure names the file (and the tensor or field) in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..config import config_from_hf
from ..errors import ModelLoadError
from ..tokenizer import load_hf_tokenizer
from . import LoadedModel, Progress


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: invalid JSON ({e})") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index}: no 'weight_map'")
        files = [folder / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise ModelLoadError(f"{f}: shard listed in {index.name} not found")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    if any(folder.glob("*.bin")) or any(folder.glob("*.pth")):
        raise ModelLoadError(f"{folder}: only pickle weights (*.bin/*.pth) found; "
                             "agentfast reads *.safetensors")
    raise ModelLoadError(f"{folder}: no *.safetensors weight file found")


def _read_safetensors(path: Path, out: dict[str, torch.Tensor], progress: Progress | None,
                      done: int, total: int) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[name] = f.get_tensor(name)
                done += 1
                if progress:
                    progress(done, total)
    except Exception as e:  # SafetensorError / OSError: corrupt header, truncated data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: corrupt or truncated safetensors file ({msg})") from None
    return done


def _count_tensors(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return len(list(f.keys()))
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: corrupt or truncated safetensors file ({msg})") from None


def load_hf(folder: Path, progress: Progress | None = None) -> LoadedModel:
    cfg_path = folder / "config.json"
    raw = _read_json(cfg_path)
    gen = folder / "generation_config.json"
    gen_cfg = _read_json(gen) if gen.is_file() else {}
    config = config_from_hf(raw, str(cfg_path))
    gen_eos = gen_cfg.get("eos_token_id", config.eos_token_ids)
    gen_eos = tuple(gen_eos) if isinstance(gen_eos, (list, tuple)) else (int(gen_eos),)
    tokenizer = load_hf_tokenizer(folder, gen_eos=gen_eos)
    files = _weight_files(folder)
    total = sum(_count_tensors(f) for f in files)
    weights: dict[str, torch.Tensor] = {}
    done = 0
    for f in files:
        done = _read_safetensors(f, weights, progress, done, total)
    # Some checkpoints store tied heads under both names; some untied ones only the embedding.
    if "lm_head.weight" in weights and config.tie_word_embeddings:
        del weights["lm_head.weight"]
    return LoadedModel(
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        source=folder,
        file_bytes=sum(f.stat().st_size for f in files),
    )
