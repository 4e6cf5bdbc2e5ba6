"""`agentfast bench`: batch-1 decode speed of every backend beside HF transformers, one GPU.

For each model shape: random bf16 weights built on the GPU, a correctness check of each fast
backend against the reference (greedy tokens; a flip is reported with the reference's logit gap),
then ms/token at each context length. Copy bandwidth is measured in the same run and gives the
roofline. Results go to JSON (one record per measurement), a markdown table and a PNG plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from agentfast.spec_decode.drafters import Drafter

from ..backends import Backend, create_backend
from ..config import ModelConfig
from ..hardware import measure_copy_bandwidth
from ..sampling import SamplingParams
from .models import SHAPES, random_weights

EMBEDDED = "embedded"


def default_models() -> list[str]:
    from ..errors import ModelLoadError
    from ..loaders import embedded_model_path

    try:
        embedded_model_path()
        return [EMBEDDED, *SHAPES]
    except ModelLoadError:
        return list(SHAPES)


def _versions() -> dict:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    return {"torch": torch.__version__, "triton": tv, "python": platform.python_version()}


def decode_seconds(backend: Backend, prompt: list[int], steps: int) -> float:
    """Seconds per token of greedy decode after prefilling `prompt` (the prefill is untimed)."""
    cache = backend.new_cache()
    logits = backend.prefill(cache, prompt, 0)
    it = backend.decode(cache, logits, len(prompt), SamplingParams(max_tokens=steps + 4),
                        frozenset(), steps + 4)
    for _ in range(4):  # warm-up steps (graph capture, compile) are not timed
        next(it)
    # no device sync here: the 4th token is on the host already, and a backend that runs the
    # whole decode in one launch (monokernel) would be waited out, its tokens then timed as free
    t0 = time.perf_counter()
    n = 0
    for _ in it:
        n += 1
    _sync(backend.device)
    return (time.perf_counter() - t0) / n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OracleDrafter(Drafter):
    """Drafts the oracle's own greedy continuation of the history (a greedy check of a
    verification step, `greedy_check(drafts=k)`: while the fast path agrees with the oracle,
    every draft is kept, so every position of every T = k + 1 step decides a token). Keeps one
    cache on the oracle, re-running only what the history added since the last proposal (the
    drafted positions it wrote are overwritten then)."""

    def __init__(self, oracle: Backend, k: int):
        from agentfast.spec_decode import DraftPolicy

        super().__init__()
        self.oracle, self.cache, self.seen = oracle, oracle.new_cache(), []
        self.policy = DraftPolicy(k=k, k_max=k, adaptive=False)  # k drafts every step

    def propose(self, history: list[int], k: int) -> list[int]:
        n = len(self.seen) if history[:len(self.seen)] == self.seen else next(
            (i for i, (a, b) in enumerate(zip(self.seen, history, strict=False)) if a != b), 0)
        n = min(n, len(history) - 1)  # the last token's logits are not kept: run it again
        logits = self.oracle.prefill(self.cache, history[n:], n)
        self.seen = list(history)
        out: list[int] = []
        while len(out) < k:
            out.append(int(torch.argmax(logits)))
            if len(out) < k:
                logits = self.oracle.prefill(self.cache, out[-1:], len(history) + len(out) - 1)
        return out


def greedy_check(oracle: Backend, fast: Backend, prompt: list[int], steps: int,
                 drafts: int = 0) -> dict:
    """Greedy tokens of `fast`, checked step by step against `oracle` (the reference backend in
    float32 on the same bf16 weights), teacher-forced along fast's own tokens: one oracle pass
    scores every step. Where fast's token is not the oracle's argmax, the oracle's logit gap
    (its max minus its logit of fast's token) tells a near-tie from a bug. With `drafts` = k
    (a backend that takes a drafter), fast decodes in verification steps of T = k + 1
    positions whose drafts are the oracle's greedy tokens (OracleDrafter): its tokens are then
    the verification step's argmaxes."""
    cache = fast.new_cache()
    logits = fast.prefill(cache, prompt, 0)
    kw: dict = {}
    if drafts:
        drafter = OracleDrafter(oracle, drafts)
        kw = {"drafter": drafter, "history": list(prompt)}
    toks = list(fast.decode(cache, logits, len(prompt), SamplingParams(max_tokens=steps),
                            frozenset(), steps, **kw))
    ocache = oracle.new_cache()
    oracle.prefill(ocache, prompt[:-1], 0)
    ref = oracle.logits(ocache, prompt[-1:] + toks[:-1], len(prompt) - 1)  # [steps, V]
    chosen = ref.gather(1, torch.tensor(toks, device=ref.device)[:, None])[:, 0]
    gaps = ref.max(dim=1).values - chosen  # 0 where fast picked the oracle's argmax
    flips = (gaps > 0).nonzero()[:, 0].tolist()
    top2 = torch.topk(ref, 2, dim=1).values
    rec = {"steps": steps, "equal": not flips, "flips": len(flips),
           "first_flip": flips[0] if flips else None,
           "max_flip_gap": float(gaps.max()), "median_top2_gap":
           float((top2[:, 0] - top2[:, 1]).median())}
    if drafts:
        rec.update(T=drafts + 1, verify_steps=drafter.steps, drafted=drafter.drafted,
                   accepted=drafter.accepted)
    return rec


def load_bench_model(key: str, dev: torch.device, dtype: torch.dtype
                     ) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Random weights at a real shape, or the embedded default's own weights ("embedded")."""
    if key == EMBEDDED:
        from ..loaders import load_model

        m = load_model(None)
        return m.config, {k: v.to(dev, dtype) for k, v in m.weights.items()}
    return SHAPES[key], random_weights(SHAPES[key], dev, dtype)


def bench_model(key: str, args, bw: float, emit) -> None:
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfg, weights = load_bench_model(key, dev, dtype)
    max_ctx = max(args.contexts) + max(args.steps, args.check_steps) + 16
    # Speed does not depend on the trained context: let a short-context model (SmolLM2: 8192)
    # run the longest benchmark context plus its decode steps.
    cfg = dataclasses.replace(cfg, max_position_embeddings=max(cfg.max_position_embeddings,
                                                               max_ctx))
    wbytes = cfg.decode_weight_bytes(2)
    base = {"model": key, "weight_bytes": wbytes, "roofline_tokens_per_s": bw / wbytes if bw
            else None, "T": 1}
    g = torch.Generator().manual_seed(1)
    prompts = {c: torch.randint(0, cfg.vocab_size, (c,), generator=g).tolist()
               for c in args.contexts}
    backends = {}
    for name in [b for b in args.backends if not b.startswith("hf-")]:
        try:
            backends[name] = create_backend(name, cfg, weights, dev, dtype, max_ctx)
        except Exception as e:  # report and go on with the other backends
            emit({**base, "backend": name, "error": f"{type(e).__name__}: {e}"[:500]})
    # The bf16 reference is checked too (with --check-reference): its flips against the fp32
    # oracle are the bf16 noise floor that the fast paths' flips are compared with.
    fast = [n for n in backends if n != "reference" or args.check_reference]
    if fast and args.check_steps:
        oracle = create_backend("reference", cfg, {k: v.float() for k, v in weights.items()},
                                dev, torch.float32, max_ctx)
        for name in fast:
            for ctx in sorted({min(args.contexts), max(args.contexts)}):
                rec = greedy_check(oracle, backends[name], prompts[ctx], args.check_steps)
                emit({**base, "backend": name, "context": ctx, "check": rec})
                if args.check_drafts and backends[name].supports_drafter:
                    rec = greedy_check(oracle, backends[name], prompts[ctx], args.check_steps,
                                       drafts=args.check_drafts)
                    emit({**base, "backend": name, "context": ctx, "T": rec["T"], "check": rec})
        del oracle
    for ctx in args.contexts:
        for name, b in backends.items():
            steps = args.steps if name != "reference" else min(args.steps, 32)
            try:
                s = decode_seconds(b, prompts[ctx], steps)
                emit({**base, "backend": name, "context": ctx, "ms_per_token": s * 1e3,
                      "tokens_per_s": 1 / s})
            except Exception as e:
                emit({**base, "backend": name, "context": ctx, "error": repr(e)[:500]})
    del backends
    hf_backends = [b for b in args.backends if b.startswith("hf-")]
    if hf_backends and dev.type == "cuda" and key != EMBEDDED:  # same shape as smollm2-135m
        _bench_hf(cfg, weights, prompts, args, hf_backends, max_ctx, base, emit)


def _bench_hf(cfg, weights, prompts, args, names, max_ctx, base, emit) -> None:
    from . import hf_baseline as hb

    try:
        model = hb.hf_model(cfg, weights, max_ctx)
    except Exception as e:
        emit({**base, "backend": "hf", "error": repr(e)[:500]})
        return
    compiled = None
    for ctx in args.contexts:
        dev_prompt = torch.tensor(prompts[ctx], device=args.device)
        for name in names:
            try:
                if name == "hf-eager":
                    s = hb.time_eager(model, dev_prompt, min(args.steps, 32))
                else:
                    compiled = compiled or hb.CompiledStep(model, max_ctx)
                    s = compiled.time(dev_prompt, args.steps)
                emit({**base, "backend": name, "context": ctx, "ms_per_token": s * 1e3,
                      "tokens_per_s": 1 / s})
            except Exception as e:
                traceback.print_exc()
                emit({**base, "backend": name, "context": ctx, "error": repr(e)[:500]})
    del model, compiled
    torch.compiler.reset()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agentfast bench", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(default_models()),
                    help=f"comma list of {', '.join(SHAPES)}, {EMBEDDED} (the embedded default's "
                    "real weights; included by default when its file is installed)")
    ap.add_argument("--contexts", default="128,1024,8192")
    ap.add_argument("--backends", default="hf-eager,hf-compile,reference,graph")
    ap.add_argument("--steps", type=int, default=128, help="decode steps timed per point")
    ap.add_argument("--check-steps", type=int, default=256, help="greedy steps compared")
    ap.add_argument("--check-drafts", type=int, default=0, metavar="K",
                    help="also check the verification step: greedy in steps of T = K + 1 "
                    "positions whose drafts are the oracle's tokens (backends with drafters)")
    ap.add_argument("--check-reference", action="store_true",
                    help="also check the bf16 reference backend against the fp32 oracle")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--tag", default="decode")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    if not 0 <= args.check_drafts <= 15:
        ap.error(f"--check-drafts {args.check_drafts}: 0 (off) to 15 drafts per step (T <= 16)")
    args.contexts = [int(c) for c in args.contexts.split(",")]
    args.backends = args.backends.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{args.tag}-{stamp}.json"
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    bw = measure_copy_bandwidth(args.device) if args.device.startswith("cuda") else None
    common = {"gpu": gpu, "copy_TBps": bw / 1e12 if bw else None, "date": stamp,
              **_versions()}
    records: list[dict] = []

    def emit(rec: dict) -> None:
        records.append({**common, **rec})
        print(json.dumps(rec), flush=True)
        path.write_text(json.dumps(records, indent=1))

    for key in args.models.split(","):
        if key not in SHAPES and key != EMBEDDED:
            ap.error(f"unknown model {key!r} (known: {', '.join(SHAPES)}, {EMBEDDED})")
        bench_model(key, args, bw or 0.0, emit)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    from .report import write_report

    write_report(records, path.with_suffix(""), " ".join(["agentfast bench", *argv]))
    return 0
