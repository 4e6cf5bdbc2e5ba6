"""Tokenizer, chat template and incremental detokenization.

Wraps a `tokenizers.Tokenizer` (built from `tokenizer.json`, or from GGUF metadata by the GGUF
loader) with the special-token ids and the Jinja chat template. Byte-level BPE tokenizers of the
GPT-2 kind encode ASCII text on a faster path (`_FastByteLevel`, the same ids). Knows nothing
about models or devices: token ids in, text out. transformers is never imported here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.runtime
import jinja2.sandbox
from tokenizers import Tokenizer as HFTokenizer

from .errors import ModelLoadError, RequestError


def _token_str(v: Any) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    if isinstance(v, dict):
        return v.get("content")
    return v


@dataclass
class Tokenizer:
    tok: HFTokenizer
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    chat_template: str | None = None
    add_bos: bool = False
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, ...
    # the ASCII fast path (_FastByteLevel), built on the first encode; False: not this tokenizer
    _fast: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`. `add_special` prepends BOS when the model wants one; chat
        templates write their own special tokens as text, which are parsed as special tokens."""
        fast = self._fast
        if fast is None:
            fast = self._fast = _FastByteLevel.of(self.tok) or False
        ids = fast.encode(text) if fast else self.tok.encode(text, add_special_tokens=False).ids
        bos = self.bos_id
        if add_special and self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def token_id(self, text: str) -> int | None:
        return self.tok.token_to_id(text)

    # ---- chat template -------------------------------------------------------------------

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages`, rendered with the model's Jinja chat template the way
        transformers' `apply_chat_template` does (same globals and filters)."""
        if not self.chat_template:
            raise RequestError("this model has no chat template; use `generate` with a raw prompt")
        template = _compile_template(self.chat_template)
        try:
            return template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
                **extra,
            )
        except jinja2.TemplateError as e:
            raise RequestError(f"chat template: {e}") from None

    def encode_chat(self, messages: list[dict[str, Any]], **kw: Any) -> list[int]:
        return self.encode_rendered(self.render_chat(messages, **kw))

    def encode_rendered(self, text: str) -> list[int]:
        """Token ids of a rendered chat prompt. Templates normally write BOS themselves; it is
        added only when the template did not."""
        ids = self.encode(text, add_special=False)
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            bos = self.special_tokens.get("bos_token")
            if not (bos and text.startswith(bos)):
                ids = [self.bos_id] + ids
        return ids


# ---- the ASCII fast path of byte-level BPE ------------------------------------------------

# GPT-2's pre-tokenizer regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
# \s+(?!\S)|\s+) on ASCII text, where \p{L}, \p{N} and \s are these classes (Python's `re`
# is ~3x faster here than the library's Oniguruma)
_WS = r"\t\n\x0b\x0c\r "
_GPT2_ASCII = re.compile(rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+"""
                         rf"|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
_DIGIT = re.compile(r"([0-9])")
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}


def _ascii_spelling() -> dict[int, str]:
    """GPT-2's byte-level spelling of the 128 ASCII bytes: the printable ones (! to ~) stand for
    themselves, the others take the code points from 256 up, in byte order."""
    others = [b for b in range(128) if not 33 <= b <= 126]
    return {b: chr(b) if 33 <= b <= 126 else chr(256 + others.index(b)) for b in range(128)}


class _FastByteLevel:
    """The ids of `tokenizers.Tokenizer.encode(text, add_special_tokens=False)` for a byte-level
    BPE tokenizer (no normalizer; pre-tokenizer ByteLevel with GPT-2's regex, after
    Digits(individual_digits) or not; added tokens without strip or single-word rules): the text
    is split at the added tokens (leftmost-longest, as the library does), each ASCII piece is
    pre-tokenized with `re` and each pre-token's ids come from a cache (the BPE model on a
    miss); a piece with other characters goes to the library whole. The pre-tokenizer is the
    expensive part of the library's encode (~0.1 ms per 600 characters on CPU); this is ~4x
    faster. `of()` builds one only after it matched the library on a sample."""

    SAMPLE = ("def f(x):\n\treturn x  +  12\n\n  \r\n", "It's 2024; we'll see 3.14 apples!",
              "a\x00b\x1f \x7f  \n\n\n   x", "<tool_call>\n{\"a\": [1, 22]}\n</tool_call>",
              "caf\u00e9 \u00e0 na\u00efve \U0001f642 \u4e2d 12 ab")

    def __init__(self, tok: HFTokenizer, digits: bool, added: dict[str, int]):
        self.tok, self.model, self.digits, self.added = tok, tok.model, digits, added
        self.split = re.compile("(" + "|".join(re.escape(a) for a in sorted(
            added, key=len, reverse=True)) + ")") if added else None
        self.spell = str.maketrans(_ascii_spelling())
        self.cache: dict[str, list[int]] = {}  # pre-token -> its ids
        # text between added tokens -> its ids: a chat is rendered whole every turn and its
        # earlier messages come back as the same pieces (19k tokens on a 2-core VM: 5.4 -> 0.3
        # ms a turn, bench/results/host-cpu-20261201-s20). Bounded by characters; the oldest
        # pieces go first.
        self.pieces: dict[str, list[int]] = {}
        self.piece_chars = 0

    @classmethod
    def of(cls, tok: HFTokenizer) -> _FastByteLevel | None:
        """One for `tok`, or None where its pipeline is not the one this reproduces."""
        try:
            pre = json.loads(tok.pre_tokenizer.__getstate__()) if tok.pre_tokenizer else {}
            model = tok.model
            if (tok.normalizer is not None or tok.truncation or tok.padding
                    or getattr(tok, "encode_special_tokens", False)
                    or type(model).__name__ != "BPE" or model.dropout
                    or model.continuing_subword_prefix or model.end_of_word_suffix):
                return None
            subs = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
            subs = [{k: v for k, v in p.items() if k in ("type", "add_prefix_space",
                                                         "use_regex", "individual_digits")}
                    for p in subs]
            if subs not in ([_BYTE_LEVEL], [_DIGITS, _BYTE_LEVEL]):
                return None
            added = {}
            for i, a in tok.get_added_tokens_decoder().items():
                if a.lstrip or a.rstrip or a.single_word or not a.content:
                    return None
                added[a.content] = i
        except (AttributeError, TypeError, ValueError):
            return None
        fast = cls(tok, len(subs) == 2, added)
        sample = [*cls.SAMPLE, "".join(added)]
        if any(fast.encode(s) != tok.encode(s, add_special_tokens=False).ids for s in sample):
            return None
        fast.cache.clear()
        fast.pieces.clear()
        fast.piece_chars = 0
        return fast

    PIECE_MIN = 256  # shorter pieces are encoded again (cheaper than keeping them)
    PIECE_CHARS = 1 << 23  # characters kept in `pieces`

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        segments = self.split.split(text) if self.split is not None else (text,)
        pieces = self.pieces
        for k, seg in enumerate(segments):
            if k % 2:  # an added token
                ids.append(self.added[seg])
                continue
            if len(seg) >= self.PIECE_MIN:
                got = pieces.get(seg)
                if got is not None:
                    ids += got
                    continue
            n0 = len(ids)
            if seg.isascii():
                self._ascii(seg, ids)
            elif seg:
                ids += self.tok.encode(seg, add_special_tokens=False).ids
            if len(seg) >= self.PIECE_MIN:
                self._keep(seg, ids[n0:])
        return ids

    def _keep(self, seg: str, ids: list[int]) -> None:
        pieces = self.pieces
        while self.piece_chars + len(seg) > self.PIECE_CHARS:
            old = next(iter(pieces), None)  # the oldest (insertion order)
            if old is None:
                self.piece_chars = 0
                break
            if pieces.pop(old, None) is not None:  # (another thread may have taken it)
                self.piece_chars -= len(old)
        if len(seg) <= self.PIECE_CHARS:
            pieces[seg] = ids
            self.piece_chars += len(seg)

    def _ascii(self, seg: str, ids: list[int]) -> None:
        # Digits(individual_digits) first: each digit is a pre-token, GPT-2's regex runs on
        # the text between them
        parts = _DIGIT.split(seg) if self.digits else (seg,)
        cache = self.cache
        for k, part in enumerate(parts):
            for p in (part,) if k % 2 else _GPT2_ASCII.findall(part):
                t = cache.get(p)
                if t is None:
                    if len(cache) >= 1 << 16:
                        cache.clear()
                    t = cache[p] = [x.id for x in self.model.tokenize(p.translate(self.spell))]
                ids += t


_TEMPLATE_CACHE: dict[str, jinja2.Template] = {}


def _raise_exception(message: str):
    raise jinja2.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The immutable sandbox, with its verdict on `loop.*` attributes short-cut: a LoopContext
    is no internal or mutable type, so only its private names are unsafe (the general check,
    with its abstract-class instance checks, is most of the sandbox's cost per message)."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) is jinja2.runtime.LoopContext:
            return not attr.startswith("_")
        return super().is_safe_attribute(obj, attr, value)


def _compile_template(source: str) -> jinja2.Template:
    t = _TEMPLATE_CACHE.get(source)
    if t is None:
        env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            t = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ModelLoadError(f"chat template does not parse: {e}") from None
        _TEMPLATE_CACHE[source] = t
    return t


def load_hf_tokenizer(folder: Path, gen_eos: tuple[int, ...] = ()) -> Tokenizer:
    """Tokenizer from an HF checkpoint folder: tokenizer.json + tokenizer_config.json
    (+ chat_template.jinja when the template lives in its own file)."""
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        raise ModelLoadError(f"{tj}: file not found (an HF checkpoint needs tokenizer.json)")
    try:
        tok = HFTokenizer.from_file(str(tj))
    except Exception as e:  # the Rust error is one line
        raise ModelLoadError(f"{tj}: cannot be read as a tokenizer ({e})") from None
    cfg: dict[str, Any] = {}
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            cfg = json.loads(tc.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{tc}: invalid JSON ({e})") from None
    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
        named = {t["name"]: t["template"] for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    jinja_file = folder / "chat_template.jinja"
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text()
    special = {k: _token_str(cfg.get(k)) for k in ("bos_token", "eos_token", "unk_token",
                                                     "pad_token")}
    special = {k: v for k, v in special.items() if v}
    bos_id = tok.token_to_id(special["bos_token"]) if "bos_token" in special else None
    eos_ids = list(gen_eos)
    if "eos_token" in special:
        e = tok.token_to_id(special["eos_token"])
        if e is not None and e not in eos_ids:
            eos_ids.append(e)
    return Tokenizer(
        tok=tok,
        bos_id=bos_id,
        eos_ids=tuple(eos_ids),
        chat_template=template,
        add_bos=bool(cfg.get("add_bos_token", False)) and bos_id is not None,
        special_tokens=special,
    )


class IncrementalDecoder:
    """Streams text from token ids, correct across multi-byte characters and merges.

    Decodes a window of tokens and emits only the text past what was already emitted; text
    ending in U+FFFD (an incomplete UTF-8 sequence) is held back until the next token completes
    it. Cost per token is bounded by the window, not the whole output.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window that gives context to the next token
        self.read_offset = 0  # tokens whose text has been emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (maybe empty)."""
        self.ids.append(token_id)
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
        full = dec(self.ids[self.prefix_offset:], self.skip_special)
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return ""
        new = full[len(prefix):]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return new

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
        full = dec(self.ids[self.prefix_offset:], self.skip_special)
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""
