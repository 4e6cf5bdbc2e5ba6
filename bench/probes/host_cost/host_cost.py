"""Host work of an agent turn that grows with the conversation, old beside new in one run (CPU).

    python bench/probes/host_cost/host_cost.py [--repeat 20] [--json FILE]

1. The n-gram lookup the monokernel backend runs on the host before a drafting launch (its
   first step's drafts, then the confidence of that match), on the histories of the trace set's
   file-edit turns (embedded tokenizer, the drafter's escaped view included): session 19's code
   (NgramDrafter.propose scanning the corpus once per suffix length, then
   kernels/monokernel/sampling.ngram_match scanning it again for the confidence) against
   session 20's (drafters.suffix_match once, NgramDrafter.match reused). Both give the same
   drafts and confidence (checked here).
2. A chat encoded whole, as every agent turn does (Engine.encode_chat): a conversation of 36
   messages with source code (~20k tokens), by the tokenizers library, by the fast path
   without its kept pieces (each encode from scratch), and with them (the same conversation
   again; then one message longer). The same ids each way (checked here).
No model weights are loaded: the embedded GGUF's tokenizer only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _old_propose(seq: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """Session 19's NgramDrafter.propose over the corpus (git 68f28ee, spec_decode/drafters.py)."""
    size = len(seq)
    last = seq[-1]
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        suffix = seq[size - n:]
        for i in range(size - n - 1, -1, -1):
            if seq[i + n - 1] == last and seq[i:i + n] == suffix:
                return seq[i + n:i + n + k]
    return []


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from agentfast.engine.constraints.gpu_bench import load_tokenizer
    from agentfast.kernels.monokernel.sampling import match_span, ngram_match
    from agentfast.spec_decode import NgramDrafter
    from agentfast.spec_decode.replay import _assistant_turns, load_traces

    tok = load_tokenizer(None)
    out: dict = {"lookup": [], "encode": {}}
    d = NgramDrafter(tokenizer=tok)
    k = 15
    print(f"lookup, ms (best of {args.repeat}): old propose + old confidence | new (one match)")
    for tr in load_traces():
        if not tr["name"].startswith("edit"):
            continue
        for i in _assistant_turns(tr):
            hist = tok.encode_chat(tr["messages"][:i], add_generation_prompt=True)
            d.begin(hist)
            seq = d.corpus(hist)

            def old(seq=seq):
                props = _old_propose(seq, d.min_ngram, d.max_ngram, k)
                span = match_span(seq, *ngram_match(seq, d.min_ngram, d.max_ngram)) if props \
                    else 0
                return props, span

            def new(hist=hist):
                s, n, e = d.match(hist)
                props = s[e + 1:e + 1 + k] if n else []
                return props, match_span(s, n, e) if props else 0

            assert old() == new(), (tr["name"], i)
            row = {"trace": tr["name"], "turn": i, "corpus": len(seq), "drafts": len(old()[0]),
                   "old_ms": round(_best(old, args.repeat), 4),
                   "new_ms": round(_best(new, args.repeat), 4)}
            out["lookup"].append(row)
            print(f"  {row['trace']:20s} turn {i}: corpus {row['corpus']:4d}, drafts "
                  f"{row['drafts']:2d}: {row['old_ms']:.3f} | {row['new_ms']:.3f}")

    code = Path(__file__).resolve().parents[3].joinpath("engine", "engine.py").read_text()
    msgs = [{"role": "system", "content": "You are a coding agent."}]
    for j in range(12):
        msgs += [{"role": "user", "content": "Please read the file and edit it. " * 3},
                 {"role": "assistant", "content": "Reading the file now."},
                 {"role": "user", "content": code[j * 500:j * 500 + 6000]}]
    text = tok.render_chat(msgs, add_generation_prompt=True)
    more = tok.render_chat(msgs + [{"role": "assistant", "content": "Done. " + code[7000:9000]}],
                           add_generation_prompt=True)
    lib = tok.tok.encode(text, add_special_tokens=False).ids
    tok.encode("x")  # builds the fast path
    fast = tok._fast
    assert fast, "the embedded tokenizer takes the fast path"

    def scratch():
        fast.pieces.clear()
        fast.piece_chars = 0
        return fast.encode(text)

    assert scratch() == lib and fast.encode(text) == lib
    assert fast.encode(more) == tok.tok.encode(more, add_special_tokens=False).ids
    enc = {"tokens": len(lib), "characters": len(text),
           "render_ms": round(_best(lambda: tok.render_chat(msgs, add_generation_prompt=True),
                                    args.repeat), 3),
           "library_ms": round(_best(lambda: tok.tok.encode(text, add_special_tokens=False),
                                     args.repeat), 3),
           "fast_scratch_ms": round(_best(scratch, args.repeat), 3)}
    fast.encode(text)
    enc["fast_kept_same_ms"] = round(_best(lambda: fast.encode(text), args.repeat), 3)

    def grown():
        fast.encode(text)  # (the conversation's pieces kept, the new message not)
        t0 = time.perf_counter()
        fast.encode(more)
        return time.perf_counter() - t0

    def drop_new():  # forget the new message's piece, so each repeat encodes it again
        for p in [p for p in fast.pieces if p not in text]:
            fast.piece_chars -= len(p)
            del fast.pieces[p]

    times = []
    for _ in range(args.repeat):
        drop_new()
        times.append(grown())
    enc["fast_kept_one_more_message_ms"] = round(min(times) * 1e3, 3)
    out["encode"] = enc
    print(f"chat encode, ms (best of {args.repeat}):", json.dumps(enc))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
