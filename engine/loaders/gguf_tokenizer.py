"""Tokenizer from GGUF metadata, built with the `tokenizers` library (transformers is not used).

Knows two kinds of `tokenizer.ggml.model`:
- "gpt2": byte-level BPE from `tokens` + `merges`; the split before BPE is chosen by
  `tokenizer.ggml.pre` (see `_PRE`), as llama.cpp defines it. "smollm" (and the starcoder family)
  isolates every number character, then applies the GPT-2 regex: `Digits(individual_digits=True)`
  + `ByteLevel(use_regex=True)`, exactly the pre-tokenizer of SmolLM2's own tokenizer.json.
  "qwen2" adds the NFC normalizer of Qwen's tokenizer.json.
- "llama": SentencePiece BPE with byte fallback (merges from the file, or rebuilt from the scores
  the way transformers' GGUF loader does), Metaspace prefix per `tokenizer.ggml.add_space_prefix`.
Control tokens (type 3) and bos/eos/unk/pad become special added tokens, so `<|im_start|>` in a
rendered chat template is one token; user-defined tokens (type 4, e.g. `<think>`) are added as
non-special tokens (they are matched whole but survive `skip_special` decoding), as transformers
does. Does not know unigram (T5), WordPiece, or pre-tokenizers not listed in `_PRE`.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..errors import ModelLoadError, UnsupportedModelError
from ..tokenizer import Tokenizer

CONTROL, USER_DEFINED = 3, 4

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (normalizer or None, pre-tokenizer factory)
_PRE = {
    "default": "gpt2", "gpt2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "smollm": "digits", "starcoder": "digits", "refact": "digits", "codeshell": "digits",
    "llama-bpe": "llama3", "llama3": "llama3", "llama-v3": "llama3", "smaug-bpe": "llama3",
    "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2",
}


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    """The decoded value of a GGUF metadata key (lists for arrays), or `default`."""
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v.item() if hasattr(v, "item") else v


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (the alphabet of byte-level vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _byte_level(pre: str, tokens: list[str], merges: list[str], source: str) -> tuple:
    kind = _PRE.get(pre)
    if kind is None:
        raise UnsupportedModelError(
            f"{source}: tokenizer.ggml.pre={pre!r} is not supported "
            f"(supported: {', '.join(sorted(_PRE))})"
        )
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, fuse_unk=False,
                                 byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif kind in ("llama3", "qwen2"):
        split = _LLAMA3_SPLIT if kind == "llama3" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = byte_level
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def sentencepiece_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a token into two tokens,
    best score first (transformers' `generate_merges` with scores)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores, strict=True):
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _sentencepiece(reader: Any, tokens: list[str], unk: int | None, source: str) -> HFTokenizer:
    merges = field_value(reader, "tokenizer.ggml.merges")
    if merges is not None:
        pairs = [tuple(m.split(" ", 1)) for m in merges]
    else:
        scores = field_value(reader, "tokenizer.ggml.scores")
        if scores is None or len(scores) != len(tokens):
            raise ModelLoadError(f"{source}: tokenizer.ggml.scores is missing or has the wrong "
                                 f"length (a SentencePiece vocabulary needs merges or scores)")
        pairs = sentencepiece_merges(tokens, [float(s) for s in scores])
    vocab = {t: i for i, t in enumerate(tokens)}
    unk_token = tokens[unk] if unk is not None and 0 <= unk < len(tokens) else None
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=unk_token,
                                 fuse_unk=True, byte_fallback=True))
    prefix = bool(field_value(reader, "tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _id(reader: Any, key: str, n: int) -> int | None:
    v = field_value(reader, f"tokenizer.ggml.{key}")
    return int(v) if v is not None and 0 <= int(v) < n else None


def tokenizer_from_gguf(reader: Any, source: str) -> Tokenizer:
    """Our `Tokenizer` from the metadata of an open `gguf.GGUFReader`; `source` names the file
    in errors."""
    model = field_value(reader, "tokenizer.ggml.model")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    if model is None or not tokens:
        raise ModelLoadError(f"{source}: no tokenizer in the file (tokenizer.ggml.model/tokens)")
    n = len(tokens)
    types = field_value(reader, "tokenizer.ggml.token_type") or [1] * n
    ids = {k: _id(reader, f"{k}_token_id", n)
           for k in ("bos", "eos", "unknown", "padding", "eot", "eom")}
    alphabet = None
    if model == "gpt2":
        merges = field_value(reader, "tokenizer.ggml.merges")
        if merges is None:
            raise ModelLoadError(f"{source}: tokenizer.ggml.merges is missing (gpt2 tokenizer)")
        pre = field_value(reader, "tokenizer.ggml.pre", "default")
        tok, alphabet = _byte_level(pre, tokens, merges, source)
        add_bos_default = False
    elif model == "llama":
        tok = _sentencepiece(reader, tokens, ids["unknown"], source)
        add_bos_default = True
    else:
        raise UnsupportedModelError(
            f"{source}: tokenizer.ggml.model={model!r} is not supported (supported: gpt2, llama)")

    named = {"bos_token": ids["bos"], "eos_token": ids["eos"], "unk_token": ids["unknown"],
             "pad_token": ids["padding"]}
    special_ids = {i for i, t in enumerate(types) if int(t) == CONTROL}
    special_ids |= {i for i in named.values() if i is not None}
    vocab = tok.get_vocab(with_added_tokens=False)
    specials = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i in sorted(special_ids)
        if (alphabet is None or set(tokens[i]) <= alphabet) and tokens[i] in vocab
    ]
    tok.add_special_tokens(specials)
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if int(t) == USER_DEFINED and tokens[i] in vocab]
    if user:
        tok.add_tokens(user)

    eos_ids = tuple(dict.fromkeys(i for i in (ids["eos"], ids["eot"], ids["eom"]) if i is not None))
    bos = ids["bos"]
    return Tokenizer(
        tok=tok,
        bos_id=bos,
        eos_ids=eos_ids,
        chat_template=field_value(reader, "tokenizer.chat_template"),
        add_bos=bool(field_value(reader, "tokenizer.ggml.add_bos_token", add_bos_default))
        and bos is not None,
        special_tokens={k: tokens[i] for k, i in named.items() if i is not None},
    )
