"""Bad input gives one clear line naming the file, field or limit (point 6 of the foundation)."""

from __future__ import annotations

import json
import shutil

import pytest

from agentfast.cli import main
from agentfast.engine import ContextLengthError, ModelLoadError, UnsupportedModelError
from agentfast.engine.loaders import load_model


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_paths(tmp_path, llama_dir):
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "nope")
    assert "nope" in _one_line(e)
    d = _copy(llama_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert "no *.safetensors" in _one_line(e)
    d2 = _copy(llama_dir, tmp_path / "m2")
    (d2 / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError) as e:
        load_model(d2)
    assert "tokenizer.json" in _one_line(e)


@pytest.mark.parametrize("how", ["truncated", "garbage", "bad_header"])
def test_corrupt_safetensors(tmp_path, llama_dir, how):
    d = _copy(llama_dir, tmp_path / how)
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x13\x37" * 1000,
                   "bad_header": data[:8] + b"{not json" + data[17:]}[how])
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    msg = _one_line(e)
    assert "model.safetensors" in msg and "corrupt or truncated" in msg


def test_sharded_index_names_missing_shard(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "sharded")
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert "model-00002-of-00002.safetensors" in _one_line(e)


def test_unsupported_architecture_and_fields(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "arch")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"],
                                               "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError) as e:
        load_model(d)
    assert "GPT2LMHeadModel" in _one_line(e) and "config.json" in str(e.value)
    (d / "config.json").write_text(json.dumps({**cfg, "rope_scaling": {"rope_type": "longrope"}}))
    with pytest.raises(UnsupportedModelError) as e:
        load_model(d)
    assert "longrope" in _one_line(e)
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as e:
        load_model(d)
    assert "hidden_size" in _one_line(e)


def test_weight_shape_mismatch_names_tensor(tmp_path, llama_dir):
    from agentfast.engine import Engine

    d = _copy(llama_dir, tmp_path / "shape")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 128}))
    with pytest.raises(ModelLoadError) as e:
        Engine.load(str(d), device="cpu")
    assert "mlp.gate_proj.weight" in _one_line(e)


def test_prompt_longer_than_context(llama_dir):
    from agentfast.engine import Engine

    eng = Engine.load(str(llama_dir), device="cpu", max_context=64)
    with pytest.raises(ContextLengthError) as e:
        eng.generate("word " * 200)
    msg = _one_line(e)
    assert "64" in msg and "tokens" in msg


@pytest.mark.parametrize("args,needle", [
    (["generate", "-m", "/definitely/missing", "hi"], "/definitely/missing"),
    (["chat", "--max-context", "8", "this prompt is longer than eight tokens surely"], "context"),
])
def test_cli_prints_one_line(capsys, llama_dir, args, needle):
    if "--max-context" in args:
        args = args[:1] + ["-m", str(llama_dir)] + args[1:]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("agentfast: error:") and needle in err[-1]
    assert not any("Traceback" in line for line in err)
