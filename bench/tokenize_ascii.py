"""Times the embedded tokenizer's encode on the library path (`tokenizers`) and on the ASCII fast
path (engine.tokenizer._FastByteLevel), side by side in one run, warm and with caches flushed
(a 64 MB array summed before each call), on ASCII text from this repository; the fast path
also with its pre-token cache emptied before each call (`fast_unseen`: every word new).

    python bench/tokenize_ascii.py --out bench/results/tokenize-ascii-<date>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from agentfast.engine import Engine
from agentfast.engine.tokenizer import _FastByteLevel

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tok = Engine.load(None, backend="reference").tokenizer.tok
    fast = _FastByteLevel.of(tok)
    assert fast is not None, "the embedded tokenizer has no fast path"
    texts = {"agent/bench.py[:1200]": (ROOT / "agentfast/agent/bench.py").read_text()[:1200],
             "agent/coding.py[:4000]": (ROOT / "agentfast/agent/coding.py").read_text()[:4000]}
    big = np.ones(8_000_000)
    rows = []
    for name, text in texts.items():
        assert text.isascii() and fast.encode(text) == tok.encode(text,
                                                                  add_special_tokens=False).ids
        for cold in (False, True):
            res = {}
            def unseen(t=text):  # every pre-token new: the BPE model on each
                fast.cache.clear()
                return fast.encode(t)

            paths = (("library", lambda t=text: tok.encode(t, add_special_tokens=False).ids),
                     ("fast", lambda t=text: fast.encode(t)), ("fast_unseen", unseen))
            for path, fn in paths:
                ts = []
                for _ in range(args.reps):
                    if cold:
                        big.sum()
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                res[path] = statistics.median(ts) * 1e3
            rows.append({"text": name, "chars": len(text), "caches": "flushed" if cold else "warm",
                         "library_ms": round(res["library"], 4), "fast_ms": round(res["fast"], 4),
                         "fast_unseen_ms": round(res["fast_unseen"], 4),
                         "speedup": round(res["library"] / res["fast"], 2)})
            print(rows[-1])
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python bench/tokenize_ascii.py", "machine": platform.processor() or
            platform.machine(), "python": platform.python_version(), "reps": args.reps,
            "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
