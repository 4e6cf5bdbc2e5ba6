"""The ASCII fast path of byte-level BPE encoding (engine.tokenizer._FastByteLevel): the same ids
as the tokenizers library on every string, used only for the pipelines it reproduces; and the
chat-template sandbox's short-cut for `loop.*` attributes."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

from agentfast.engine.tokenizer import Tokenizer, _FastByteLevel

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>x"]
PIECES = ["  ", "\n\n", "\n", " \n ", "ab", " x", "X", "'s", "'S", "'ll", "'re", "12", " 3",
          "3.14", "\t ", "\r\n", "\x00", "\x1f", "\x7f", "\x0b\x0c", "!?", " !!", "__", "é",
          "ß", "中", "\U0001f642", "\u00a0", "\u2028", "\u0663", "\u2167", "\x85", "a'", "''s"]


def _strings(seed: int, n: int, specials: list[str]) -> list[str]:
    rng = random.Random(seed)
    alphabet = [chr(i) for i in range(128)] + PIECES + specials
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(n)]


def _byte_level_tokenizer(digits: bool) -> HFTokenizer:
    from tiny_models import CORPUS
    from tokenizers import trainers

    tok = HFTokenizer(models.BPE())
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  bl]) if digits else bl)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS[:3],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.add_special_tokens(["<|im_start|>x"])  # overlaps <|im_start|>: the longest wins
    return tok


@pytest.mark.parametrize("digits", [False, True])
def test_fast_path_equals_library(digits):
    hf = _byte_level_tokenizer(digits)
    fast = _FastByteLevel.of(hf)
    assert fast is not None and fast.digits == digits
    for s in _strings(digits, 3000, SPECIALS):
        assert fast.encode(s) == hf.encode(s, add_special_tokens=False).ids, repr(s)
    assert fast.cache  # pre-tokens were cached


def test_fast_path_equals_library_on_embedded(smol):
    tok = smol.tokenizer
    hf = tok.tok
    specials = [a.content for a in hf.get_added_tokens_decoder().values()]
    tok.encode("x")
    assert isinstance(tok._fast, _FastByteLevel)  # SmolLM2: Digits + ByteLevel
    texts = _strings(7, 3000, specials) + [
        "<|im_start|>user\n<tool_response>\n   1| def add(a, b):\n   2|     return a - b\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n",
        "=" * 35 + " FAILURES " + "=" * 35 + "\nE       assert -1 == 5\n!!!! stopping !!!!\n"]
    for s in texts:
        assert tok.encode(s) == hf.encode(s, add_special_tokens=False).ids, repr(s)


def test_long_pieces_are_kept_and_still_equal_the_library():
    """Text between added tokens of PIECE_MIN characters or more is kept with its ids (a chat is
    rendered whole every turn): encoding the same conversation again, grown by a message, with
    an earlier message edited, or past the character bound (oldest pieces dropped first)
    gives the library's ids every time."""
    hf = _byte_level_tokenizer(True)
    fast = _FastByteLevel.of(hf)
    rng = random.Random(3)
    msgs = ["".join(rng.choice(PIECES + ["abc", " def", "12"]) for _ in range(rng.randint(
        1, 200))) for _ in range(40)]

    def render(ms):
        return "".join(f"<|im_start|>user\n{m}<|im_end|>\n" for m in ms)

    for n in (5, 6, 20, 40, 40):
        text = render(msgs[:n])
        assert fast.encode(text) == hf.encode(text, add_special_tokens=False).ids
    long = [m for m in msgs if len(m) >= fast.PIECE_MIN]
    assert len(long) > 5 and all("user\n" + m in fast.pieces for m in long)
    assert sum(len(p) for p in fast.pieces) == fast.piece_chars > 0
    msgs[3] = msgs[3] + " edited 7"
    text = render(msgs)
    assert fast.encode(text) == hf.encode(text, add_special_tokens=False).ids
    fast.PIECE_CHARS = 3 * fast.PIECE_MIN  # (instance attribute: this tokenizer only)
    fast.pieces.clear()
    fast.piece_chars = 0
    for n in (10, 40):
        text = render(msgs[:n])
        assert fast.encode(text) == hf.encode(text, add_special_tokens=False).ids
        assert fast.piece_chars == sum(len(p) for p in fast.pieces) <= fast.PIECE_CHARS


def test_fast_path_only_for_pipelines_it_reproduces():
    hf = _byte_level_tokenizer(False)
    hf.normalizer = normalizers.NFC()
    assert _FastByteLevel.of(hf) is None
    hf = _byte_level_tokenizer(False)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    assert _FastByteLevel.of(hf) is None
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    assert _FastByteLevel.of(hf) is None
    hf = _byte_level_tokenizer(False)
    from tokenizers import AddedToken

    hf.add_tokens([AddedToken("<x>", lstrip=True)])
    assert _FastByteLevel.of(hf) is None
    tok = Tokenizer(hf)
    assert tok.encode(" <x> a") == hf.encode(" <x> a", add_special_tokens=False).ids
    assert tok._fast is False  # checked once, the library's path from then on


def test_tokenizer_encode_uses_fast_path_and_bos():
    hf = _byte_level_tokenizer(True)
    tok = Tokenizer(hf, bos_id=hf.token_to_id("<|im_start|>"), add_bos=True)
    assert tok.encode("hi 12") == hf.encode("hi 12", add_special_tokens=False).ids
    assert isinstance(tok._fast, _FastByteLevel)
    tok._fast.cache["hi"] = [0]  # a poisoned cache entry shows the fast path is the one used
    assert tok.encode("hi")[0] == 0
    assert tok.encode("hi", add_special=True)[:2] == [tok.bos_id, 0]


def test_template_sandbox_same_verdicts_on_loop_attributes():
    """The chat-template sandbox short-cuts its check of `loop.*` attributes; what templates
    see (and what they are refused) is the stock immutable sandbox's."""
    import jinja2.sandbox

    from agentfast.engine.tokenizer import _compile_template, _Sandbox

    exprs = ["loop.first", "loop.last", "loop.index0", "loop.length", "loop.previtem",
             "loop.cycle(1, 2)", "loop._iterator", "loop.__class__", "loop.__class__.__mro__",
             "loop.__init__.__globals__", "xs.append(3)", "xs.__len__()"]

    def verdicts(env) -> list[str]:
        out = []
        for e in exprs:
            try:
                out.append(env.from_string("{% for m in xs %}{{ " + e + " }}|{% endfor %}")
                           .render(xs=[1, 2]))
            except jinja2.exceptions.SecurityError:
                out.append("refused")
        return out

    stock = verdicts(jinja2.sandbox.ImmutableSandboxedEnvironment())
    assert verdicts(_Sandbox()) == stock
    assert stock.count("refused") >= 3  # the refusals are part of what is compared
    assert isinstance(_compile_template("{{ 1 }}").environment, _Sandbox)
