"""Prefill time of the fast backends on the GPU: CUDA-graph chunks (engine/backends/prefill.py)
against the eager reference forward, per prompt length and start; the first call (which
captures the graphs of a new chunk size and key bucket) apart. The embedded model, or random
weights at a real shape (engine/bench/models.py SHAPES, bf16).

    python bench/prefill_ttft.py graph monokernel [--shapes embedded,qwen3-1.7b]
    (writes $OUT/prefill_graphs.json when OUT is set)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from agentfast.engine import Engine, SamplingParams

CASES = ((1, 0), (16, 0), (37, 0), (168, 0), (881, 0), (37, 881), (168, 700))  # (tokens, start)


def timed(fn, reps: int = 7) -> tuple[float, float]:
    """(median, min) ms of fn() with the GPU synchronized around it."""
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        a = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - a) * 1e3)
    return round(statistics.median(out), 3), round(min(out), 3)


def run(backend: str, shape: str) -> list[dict]:
    eng = None
    if shape == "embedded":
        eng = Engine.load(None, device="cuda", backend=backend)
        be = eng.backend
    else:
        from agentfast.engine.backends import create_backend
        from agentfast.engine.bench.run import load_bench_model

        dev = torch.device("cuda")
        cfg, weights = load_bench_model(shape, dev, torch.bfloat16)
        be = create_backend(backend, cfg, weights, dev, torch.bfloat16, 4096)
        del weights
    ids, rows = list(range(100, 1300)), []
    for graphs in (True, False):
        be.graph_prefill = graphs
        cache = be.new_cache()
        for n, start in CASES:
            def call(n=n, start=start, cache=cache):
                return be.prefill(cache, ids[:n], start)

            first = timed(call, reps=1)[0]
            med, low = timed(call)
            r = dict(model=shape, backend=backend, graph_prefill=graphs, n=n, start=start,
                     first_ms=first, median_ms=med, min_ms=low)
            rows.append(r)
            print(json.dumps(r), flush=True)
    logits = []
    for graphs in (True, False):  # the two paths on the same prompt (bf16)
        be.graph_prefill = graphs
        logits.append(be.prefill(be.new_cache(), ids[:300], 0))
    print(shape, backend, "graphs vs eager: logits max abs diff",
          float((logits[0] - logits[1]).abs().max()), "argmax equal",
          int(logits[0].argmax()) == int(logits[1].argmax()), flush=True)
    be.graph_prefill = True
    p = SamplingParams(max_tokens=1, temperature=0.0)
    for n in (37, 168) if eng is not None else ():
        ttft = [round(eng.generate(ids[:n], p).ttft_s * 1e3, 2) for _ in range(4)]
        print(backend, f"generate(max_tokens=1), {n} tokens: TTFT ms {ttft}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backends", nargs="*", default=["monokernel"])
    ap.add_argument("--shapes", default="embedded")
    args = ap.parse_args()
    from agentfast.engine.bench.models import SHAPES

    bad = [s for s in args.shapes.split(",") if s != "embedded" and s not in SHAPES]
    if bad:
        ap.error(f"unknown shapes {bad}; known: embedded, {', '.join(SHAPES)}")
    rows = [r for shape in args.shapes.split(",") for b in args.backends for r in run(b, shape)]
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "prefill_graphs.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
