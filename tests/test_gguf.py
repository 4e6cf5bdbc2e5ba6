"""GGUF loader and tokenizer: the embedded SmolLM2 file against transformers' own GGUF loading,
synthetic files (written with gguf.GGUFWriter) for every arch and tensor type, and bad files."""

from __future__ import annotations

import math
import os

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from agentfast.engine.errors import ModelLoadError, UnsupportedModelError
from agentfast.engine.loaders import embedded_model_path, load_model
from agentfast.engine.loaders.gguf import hf_name, load_gguf
from agentfast.engine.loaders.gguf_tokenizer import bytes_to_unicode


@pytest.fixture(scope="module")
def embedded():
    try:
        return embedded_model_path()
    except ModelLoadError as e:
        pytest.skip(f"embedded model absent: {e}")


@pytest.fixture(scope="module")
def ours(embedded):
    return load_model(embedded)


@pytest.fixture(scope="module")
def hf_model(embedded):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(embedded.parent), gguf_file=embedded.name, dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_tok(embedded):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(embedded.parent), gguf_file=embedded.name)


def test_embedded_weights_equal_transformers(ours, hf_model):
    ref = hf_model.state_dict()
    c = ours.config
    assert (c.arch, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (
        "llama", 30, 576, 9, 3, 64)
    assert c.tie_word_embeddings and c.vocab_size == 49152 and c.eos_token_ids == (2,)
    assert set(ours.weights) == set(ref) - {"lm_head.weight"}  # tied: no separate head
    for name, w in ours.weights.items():
        assert w.dtype == torch.float32 and w.shape == ref[name].shape, name
        assert torch.equal(w, ref[name]), name
    assert ours.file_bytes == embedded_model_path().stat().st_size


STRINGS = ["Hello world!", "def f(x):\n    return x**2  # square\n\n\n", "12345", "3.14159",
           "héllo wörld 世界 🎉👍🏽 naïve", "   lots   of\t\tspaces \n\n end", "I'm sure they'll",
           "<|im_start|>user\nhi<|im_end|>\n", "a<|endoftext|>b", "x = [1, 2, 3]"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2=?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3*7?"}],
]


def test_embedded_tokenizer_equals_transformers(ours, hf_tok):
    tk = ours.tokenizer
    assert tk.chat_template == hf_tok.chat_template
    assert (tk.bos_id, tk.eos_ids, tk.add_bos) == (1, (2,), False)
    assert tk.special_tokens["eos_token"] == hf_tok.eos_token == "<|im_end|>"
    texts = STRINGS + [tk.render_chat(c) for c in CONVERSATIONS]
    for conv in CONVERSATIONS:
        assert tk.render_chat(conv) == hf_tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True)
    for s in texts:
        ids = tk.encode(s)
        assert ids == hf_tok.encode(s, add_special_tokens=False), s
        assert tk.decode(ids, skip_special=False) == hf_tok.decode(ids) == s
    assert tk.encode("<|im_start|>") == [1]


def test_smollm_pretokenizer_isolates_digits(ours, hf_tok):
    """SmolLM2's tokenizer.json (and llama.cpp's "smollm") split every digit off before the GPT-2
    regex; transformers' GGUF path only applies the GPT-2 regex, which differs when whitespace
    precedes a digit. With its pre-tokenizer set the way tokenizer.json has it, they agree."""
    from tokenizers import pre_tokenizers

    ref = hf_tok.backend_tokenizer
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    for s in STRINGS + ["  12 34 a1b2", "x²³ ½ ٣٤", "  \n 7"]:
        assert ours.tokenizer.encode(s) == ref.encode(s, add_special_tokens=False).ids, s
    assert ours.tokenizer.encode("  12") == [256, 33, 34]  # "ĠĠ", "1", "2"


# ---- synthetic files -------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "ll o", "he llo", "Ġ hello", "Ġ w"]
TOKENS = SPECIALS + list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES] + [
    "<think>"]
TYPES = [3] * 3 + [1] * (len(TOKENS) - 4) + [4]
# head_dim 128: transformers reads no qwen3.attention.key_length and assumes Qwen3's default 128
H, HEADS, KV, FF, LAYERS = 512, 4, 2, 512, 2
D = H // HEADS


def _layer_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    s = {"attn_norm.weight": (H,), "ffn_norm.weight": (H,), "attn_q.weight": (H, H),
         "attn_k.weight": (KV * D, H), "attn_v.weight": (KV * D, H), "attn_output.weight": (H, H),
         "ffn_gate.weight": (FF, H), "ffn_up.weight": (FF, H), "ffn_down.weight": (H, FF)}
    if arch == "qwen2":
        s.update({"attn_q.bias": (H,), "attn_k.bias": (KV * D,), "attn_v.bias": (KV * D,)})
    if arch == "qwen3":
        s.update({"attn_q_norm.weight": (D,), "attn_k_norm.weight": (D,)})
    return s


def random_tensors(arch: str, seed: int = 0, tied: bool = False, vocab: int = len(TOKENS)
                   ) -> dict[str, np.ndarray]:
    """HF-shaped ([out, in]) float32 tensors under GGUF names."""
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (vocab, H), "output_norm.weight": (H,)}
    if not tied:
        shapes["output.weight"] = (vocab, H)
    for n in range(LAYERS):
        shapes.update({f"blk.{n}.{k}": v for k, v in _layer_shapes(arch).items()})
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}


def gpt2_tokenizer(w: gguf.GGUFWriter, pre: str = "qwen2") -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(TOKENS)
    w.add_token_types(TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}")


def write_gguf(path, arch, tensors, qtype=T.F32, raw=None, meta=None, tok=gpt2_tokenizer):
    """Write a tiny GGUF. 2-D tensors are stored as `qtype` (quantized with gguf.quants), or as
    the raw block bytes given in `raw` (name -> (uint8 array, type)); 1-D tensors stay F32;
    `tok(writer)` writes the tokenizer metadata."""
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in {"block_count": LAYERS, "embedding_length": H, "feed_forward_length": FF,
                 "attention.head_count": HEADS, "attention.head_count_kv": KV,
                 "attention.key_length": D, "context_length": 512}.items():
        w.add_uint32(f"{arch}.{k}", v)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    for k, v in (meta or {}).items():
        w.add_uint32(k, v)
    tok(w)
    for name, a in tensors.items():
        if raw and name in raw:
            w.add_tensor(name, raw[name][0], raw_dtype=raw[name][1])
        elif a.ndim == 2 and qtype == T.F16:
            w.add_tensor(name, a.astype(np.float16))
        elif a.ndim == 2 and qtype != T.F32:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hf(name: str) -> str:
    return hf_name(name, "test")


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_synthetic_arch_equals_transformers(tmp_path, arch):
    transformers = pytest.importorskip("transformers")
    tensors = random_tensors(arch, tied=arch == "qwen3")
    path = write_gguf(tmp_path / f"{arch}.gguf", arch, tensors)
    calls = []
    m = load_gguf(path, progress=lambda done, total: calls.append((done, total)))
    c = m.config
    assert (c.arch, c.qkv_bias, c.qk_norm, c.tie_word_embeddings) == (
        arch, arch == "qwen2", arch == "qwen3", arch == "qwen3")
    assert (c.num_kv_heads, c.head_dim, c.vocab_size) == (KV, D, len(TOKENS))
    assert calls[-1] == (len(tensors), len(tensors)) and len(calls) == len(tensors)
    for name, a in tensors.items():  # F32: stored as is, no permutation for qwen
        assert torch.equal(m.weights[hf(name)], torch.from_numpy(a)), name
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32).state_dict()
    for name, w in m.weights.items():
        assert torch.equal(w, ref[name]), name
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for s in ["hello world", " hello<|im_end|>\n<think>x", "12 345"]:
        assert m.tokenizer.encode(s) == tok.encode(s, add_special_tokens=False), s
    assert m.tokenizer.decode(m.tokenizer.encode("a<think>b")) == "a<think>b"  # not special


SP_PIECES = ["\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581h", "he", "ll", "llo",
             "hello", "\u2581hello", "\u2581w", "or", "\u2581wor", "\u2581world", "t", "\u2581t",
             "th", "\u2581th", "\u2581the"]
SP_TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + SP_PIECES + [
    "<|im_start|>"]


def sentencepiece_tokenizer(w: gguf.GGUFWriter) -> None:
    """A llama-style SentencePiece vocabulary: scores and byte tokens, no merges."""
    w.add_tokenizer_model("llama")
    w.add_token_list(SP_TOKENS)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(SP_PIECES) + [3])
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(SP_PIECES))] + [0.0])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def test_sentencepiece_tokenizer_equals_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tensors = random_tensors("llama", vocab=len(SP_TOKENS))
    path = write_gguf(tmp_path / "sp.gguf", "llama", tensors, tok=sentencepiece_tokenizer)
    tk = load_gguf(path).tokenizer
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert tk.add_bos and (tk.bos_id, tk.eos_ids) == (1, (2,))
    for s in ["hello world", " hello  the world", "hello\nworld \u00fc \U0001f389", "the",
              "<|im_start|>hello</s>x<unk>"]:
        ids = tk.encode(s, add_special=True)
        assert ids == ref.encode(s), s
        assert tk.decode(ids, skip_special=False) == ref.decode(ids), s
        assert tk.decode(ids) == ref.decode(ids, skip_special_tokens=True), s


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute (HF rows -> GGUF rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def test_llama_unpermutes_q_and_k(tmp_path):
    tensors = random_tensors("llama", seed=1)
    stored = dict(tensors)
    for n in range(LAYERS):
        for proj, heads in (("q", HEADS), ("k", KV)):
            name = f"blk.{n}.attn_{proj}.weight"
            stored[name] = llama_cpp_permute(tensors[name], heads)
    m = load_gguf(write_gguf(tmp_path / "l.gguf", "llama", stored))
    for name, a in tensors.items():
        assert torch.equal(m.weights[hf(name)], torch.from_numpy(a)), name


@pytest.mark.parametrize("qtype", [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1])
def test_tensor_types_quantized(tmp_path, qtype):
    tensors = random_tensors("qwen3", seed=2)
    m = load_gguf(write_gguf(tmp_path / "q.gguf", "qwen3", tensors, qtype=qtype))
    tol = {T.F16: 1e-3, T.BF16: 1e-2, T.Q8_0: 0.05, T.Q4_0: 0.6, T.Q4_1: 0.6}[qtype]
    for name, a in tensors.items():
        w = m.weights[hf(name)]
        assert w.dtype == torch.float32 and tuple(w.shape) == a.shape, name
        if a.ndim == 2:
            want = gguf.quants.dequantize(gguf.quants.quantize(a, qtype), qtype)
            assert torch.equal(w, torch.from_numpy(want.reshape(a.shape))), name
        assert np.abs(w.numpy() - a).max() <= tol * np.abs(a).max(), name


def random_blocks(rows: int, cols: int, qtype: T, rng) -> np.ndarray:
    """Random K-quant blocks with finite fp16 scales (d, dmin) in their place."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale_at = {T.Q4_K: [0, 2], T.Q6_K: [208]}[qtype]
    for at in scale_at:
        d = rng.uniform(0.001, 0.05, b.shape[:2]).astype(np.float16)
        b[..., at:at + 2] = d.view(np.uint8).reshape(*b.shape[:2], 2)
    return b.reshape(rows, -1)


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K])
def test_tensor_types_k_quants(tmp_path, qtype):
    rng = np.random.default_rng(3)
    tensors = random_tensors("qwen3", seed=3)
    raw = {k: (random_blocks(*a.shape, qtype, rng), qtype)
           for k, a in tensors.items() if a.ndim == 2}
    m = load_gguf(write_gguf(tmp_path / "k.gguf", "qwen3", tensors, raw=raw))
    for name, (blocks, _) in raw.items():
        want = gguf.quants.dequantize(blocks, qtype)
        w = m.weights[hf(name)]
        assert tuple(w.shape) == tensors[name].shape and np.isfinite(want).all(), name
        assert torch.equal(w, torch.from_numpy(want.reshape(tensors[name].shape))), name


def llama3_factors(dim, theta, factor, orig, low=1.0, high=4.0):
    out = []
    for f in 1.0 / theta ** (np.arange(0, dim, 2) / dim):
        wl = 2 * math.pi / f
        s = (orig / wl - low) / (high - low)
        out.append(1.0 if wl < orig / high else factor if wl > orig / low
                   else 1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def test_llama3_rope_freqs_mapped(tmp_path):
    t = random_tensors("llama", seed=4)
    t["rope_freqs.weight"] = llama3_factors(D, 10000.0, 8.0, 256)
    m = load_gguf(write_gguf(tmp_path / "r.gguf", "llama", t,
                             meta={"llama.rope.scaling.original_context_length": 256}))
    rs = m.config.rope_scaling
    assert (rs.rope_type, rs.factor, rs.original_max_position_embeddings) == ("llama3", 8.0, 256)
    assert "rope_freqs.weight" not in m.weights
    t["rope_freqs.weight"] = np.linspace(1, 3, D // 2, dtype=np.float32)
    with pytest.raises(UnsupportedModelError, match="rope_freqs"):
        load_gguf(write_gguf(tmp_path / "r2.gguf", "llama", t))


# ---- errors ----------------------------------------------------------------------------------

def _one_line(exc: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for n in names:
        assert n in msg, msg


def test_missing_truncated_garbage(tmp_path, embedded):
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "nope.gguf")
    _one_line(e, "nope.gguf")
    with pytest.raises(ModelLoadError) as e:
        load_gguf(tmp_path / "nope.gguf")
    _one_line(e, "nope.gguf")
    data = embedded.read_bytes()
    cases = {"half.gguf": data[: len(data) // 2], "head.gguf": data[:4096], "empty.gguf": b"",
             "garbage.gguf": os.urandom(10000), "magic.gguf": b"GGUF" + os.urandom(10000)}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ModelLoadError) as e:
            load_model(tmp_path / name)
        _one_line(e, name)


def test_unsupported_arch_type_tensor(tmp_path):
    t = random_tensors("llama")
    with pytest.raises(UnsupportedModelError) as e:
        load_gguf(write_gguf(tmp_path / "g.gguf", "gemma", t))
    _one_line(e, "g.gguf", "gemma")
    a = t["blk.0.ffn_up.weight"]
    raw = {"blk.0.ffn_up.weight": (np.zeros((FF, H // 256 * 84), np.uint8), T.Q2_K)}
    with pytest.raises(UnsupportedModelError) as e:
        load_gguf(write_gguf(tmp_path / "t.gguf", "llama", t, raw=raw))
    _one_line(e, "t.gguf", "blk.0.ffn_up.weight", "Q2_K")
    with pytest.raises(UnsupportedModelError) as e:
        load_gguf(write_gguf(tmp_path / "x.gguf", "llama", {**t, "blk.0.ffn_gate_inp.weight": a}))
    _one_line(e, "x.gguf", "blk.0.ffn_gate_inp.weight")
    with pytest.raises(UnsupportedModelError) as e:
        load_gguf(write_gguf(tmp_path / "p.gguf", "qwen2", random_tensors("qwen2"),
                             tok=lambda w: gpt2_tokenizer(w, pre="nope")))
    _one_line(e, "p.gguf", "nope")
    del t["blk.1.ffn_down.weight"]
    with pytest.raises(ModelLoadError) as e:
        load_gguf(write_gguf(tmp_path / "m.gguf", "llama", t))
    _one_line(e, "m.gguf", "model.layers.1.mlp.down_proj.weight")


CHATS = ["What is the capital of France?", "Write a Python function that adds two numbers.",
         "List three colors."]


def test_embedded_greedy_chat_equals_transformers(ours, hf_model):
    """Same greedy text as transformers' own GGUF load of the embedded file, for chat prompts."""
    from agentfast.engine import Engine, SamplingParams

    eng = Engine(ours, device="cpu", dtype=torch.float32)
    texts = []
    for q in CHATS:
        ids = eng.encode_chat([{"role": "user", "content": q}])
        r = eng.generate(ids, SamplingParams(max_tokens=40))
        with torch.no_grad():
            out = hf_model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False,
                                    eos_token_id=list(eng.eos_ids), pad_token_id=2)
        theirs = [t for t in out[0, len(ids):].tolist() if t not in eng.eos_ids]
        assert r.token_ids == theirs, q
        texts.append(r.text)
    assert texts[0] == "The capital of France is Paris."
