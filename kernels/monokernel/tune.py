"""Where the monokernel's time goes, on a GPU: variants, per-op breakdown, T and context costs.

    python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b \\
        --variants "chunk=8192;chunk=16384,warps=8;per_sm=1" [--breakdown] [--tsteps 4,8,16] \\
        [--contexts 128,4096,32768]

Random bf16 weights at real shapes (engine/bench/models.py SHAPES), a KV cache filled with
random values up to the context (speed does not depend on them; correctness is gpu_check's and
the bench's job), greedy, T = 1 unless said. A variant is a comma list of Tiling fields (bn, bk,
chunk, stages, bn_lm, attn_splits, attn_block, tiles, merge_heads, ...), T (positions per step)
one=1 (T > 1: every step as one position, per-step switching's plain steps; one=2 narrow),
mtp=1 (an MTP module's ops after every step: plan(mtp=True), a module made from the random
weights' last layer; its head runs where the next step is one position, as where the lookup
drafts nothing, and its draft is never used, so every step keeps its width)
and launch knobs (warps, per_sm, programs: a total program count instead of per_sm x SMs, e.g.
fewer than one per SM for small models, maxnreg: a register cap, red=1: matvec chunks reduced as
they arrive, relaxed=1: every release without its fence (timing only: results may be wrong;
the most a flag-in-data hand-over could save; relaxed=M, M > 1 even: only the opcodes in the mask
M, bit op, e.g. 2 QKV, 4 ATTN, 16 GATEUP, 32 DOWN, 4096 OPROJ_M); unset: the backend's
defaults, 4 warps, 2 per SM, registers uncapped). --breakdown
times every variant with each op kind's compute skipped (its waits and releases kept; its
weight loads too on the one-position and narrow paths, not in a T-step's tl.dot matvecs), in
its own kernel and step kind (T, one): op cost = full - skipped; "sync only" skips them all.
Copy bandwidth is measured in the same run.
Prints a table; JSON to $OUT/tune.json. --timeline: one step of every variant traced
(global-timer stamps per record: start, wait ended, released; kernel.Monokernel.launch(trace=))
and summed per op kind: the op's span on the critical path (its last release minus its
producer's last release), how long after that the first waiter saw it (sync latency), the
median and the slowest program's busy time after its wait; raw stamps to $OUT/timeline-*.npz.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from agentfast.engine.bench.models import SHAPES
from agentfast.engine.hardware import measure_copy_bandwidth

from . import plan as P
from . import weights as W
from .harness import Harness
from .kernel import Monokernel
from .sync import NSTAMP

TILING_KEYS = {"bn", "bk", "chunk", "stages", "bn_lm", "bn_lm_t", "attn_splits", "attn_splits_t",
               "attn_block", "attn_stages", "attn_stages_one",
               "tiles", "attn_fold", "fma_t", "fma_t_max",
               "fma_t_elems", "merge_heads", "attn_block_t0", "merge_elems", "one_tiles",
               "narrow", "oproj_merge", "kind_tables", "narrow_merge",
               "attn_wait_loop", "stages_qkv", "stages_om", "stages_gu", "stages_dn", "qkv_ll",
               "attn_new_last", "norm_early"}
SKIPPABLE = [P.QKV, P.ATTN, P.OPROJ, P.OPROJ_M, P.GATEUP, P.DOWN, P.LMHEAD]


def parse_variant(text: str) -> dict:
    out: dict = {}
    for kv in filter(None, (s.strip() for s in text.split(","))):
        k, eq, v = kv.partition("=")
        if not eq or not v.strip().lstrip("-").isdigit():
            raise SystemExit(f"variant item {kv!r}: expected key=integer (e.g. chunk=16384)")
        out[k.strip()] = int(v)
    bad = set(out) - TILING_KEYS - {"warps", "per_sm", "programs", "maxnreg", "red", "relaxed",
                                    "T", "one", "mtp"}
    if bad:
        raise SystemExit(f"unknown variant keys {sorted(bad)}")
    return out


def start_at(h: Harness, ctx: int, max_new: int, one: int = 0) -> None:
    """A sequence at position `ctx` whose cache holds random keys and values; `one` (a kernel
    of T > 1): every step runs as one position (1: state[STEP_ONE], per-step switching's plain
    steps) or narrow (2: a plan with Tiling.narrow)."""
    for t in (h.bufs.k_cache, h.bufs.v_cache):  # (every layer: an MTP module's too)
        t[:, :, :ctx].normal_(0, 0.5)
    W.start_sequence(h.bufs, h.w, token=1, pos=ctx, max_new=max_new, stop_ids=[],
                     capacity=h.max_len, mode=W.GREEDY, temperature=0.0, top_k=0, top_p=1.0,
                     seed=0)
    h.bufs.state[W.STEP_ONE] = one
    if h.plan.mtp:  # the module's head runs where the next step is one position (as where the
        # lookup drafts nothing); its draft is never used (a floor above 1), widths stay; its
        # ops after every step (M_LAZY 0), over the step's positions
        h.bufs.state[W.M_ON], h.bufs.state[W.M_FLOOR] = 1, W.Q16 + 1
        h.bufs.state[W.M_KV], h.bufs.state[W.M_LAZY] = ctx, 0


def time_steps(h: Harness, mk: Monokernel, ctx: int, steps: int, skip: int = 0,
               reps: int = 3, one: int = 0) -> float:
    """Best of `reps` launches: microseconds per step."""
    best = float("inf")
    for _ in range(reps):
        start_at(h, ctx, 1 << 30, one)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        mk.launch(h.bufs, steps, skip=skip)
        e1.record()
        e1.synchronize()
        mk.check(h.bufs)
        ran = int(h.bufs.state[W.STEPS])
        assert ran == steps, f"ran {ran} of {steps} steps"
        best = min(best, e0.elapsed_time(e1) * 1e3 / ran)
    return best


def timeline_summary(plan: P.Plan, tr: np.ndarray, one: int = 0) -> dict:
    """Per op kind, from one traced step (tr: int64 [programs, records, sync.NSTAMP] = start,
    waited, phase marks 2.., released in ns): critical-path span (last release minus the
    producer's last release), sync latency (first waiter's wake-up minus the producer's last
    release; `wake_med_us` / `wake_max_us`: the median and the last waiter's, over the records
    that waited after that release), median and max busy time (release minus wake-up) over the
    op's records, and per
    phase mark the median time from wake-up to the mark (`phase<k>_us`, records that have it;
    marks: ops_mv x loaded / first tile / last tile, ops_attn q k v ready / softmax done /
    ticket / merged, or where O-proj merges (attn_run) the first block's keys and values in
    registers / its scores / its online step), summed/averaged over layers."""
    by_seq: dict[int, list[tuple[int, ...]]] = {}
    for p, prog in enumerate(plan.kind_programs(one)):  # (the traced step's records)
        for j, ins in enumerate(prog):
            r = [int(v) for v in tr[p, j]]
            waited = r[1] or r[0]  # (ATTN runs of empty tiles do not wait)
            by_seq.setdefault(ins.seq, []).append((r[0], waited, r[-1], *r[2:-1]))
    t0 = min(r[0] for recs in by_seq.values() for r in recs)
    done = {seq: max(r[2] for r in recs) for seq, recs in by_seq.items()}
    kinds: dict[str, dict] = {}
    for op in plan.ops:
        recs = by_seq.get(op.seq)
        if not recs:
            continue
        ready = t0 if op.seq == 0 else done[op.seq - 1]
        busy = sorted(r[2] - r[1] for r in recs)
        k = kinds.setdefault(P.OP_NAMES[op.opcode], {"n": 0, "span_us": 0.0, "sync_us": 0.0,
                                                      "busy_med_us": 0.0, "busy_max_us": 0.0})
        k["n"] += 1
        k["span_us"] += (done[op.seq] - ready) / 1e3
        k["sync_us"] += (min(r[1] for r in recs) - ready) / 1e3
        wake = sorted(r[1] - ready for r in recs if r[1] >= ready)
        if wake:
            k["wake_med_us"] = k.get("wake_med_us", 0.0) + wake[len(wake) // 2] / 1e3
            k["wake_max_us"] = k.get("wake_max_us", 0.0) + wake[-1] / 1e3
            k["n_wake"] = k.get("n_wake", 0) + 1
        k["busy_med_us"] += busy[len(busy) // 2] / 1e3
        k["busy_max_us"] += busy[-1] / 1e3
        for m in range(3, len(recs[0])):  # phase marks present in this op's records
            got = sorted(r[m] - r[1] for r in recs if r[m] > 0)
            if got:
                f = f"phase{m - 1}_us"
                k[f] = k.get(f, 0.0) + got[len(got) // 2] / 1e3
    for k in kinds.values():  # per op: averages over its layers; span stays a sum
        nw = k.pop("n_wake", 0)
        for f in [f for f in k if f.endswith("_us") and f != "span_us"]:
            k[f] = round(k[f] / (nw if f.startswith("wake_") else k["n"]), 3)
        k["span_us"] = round(k["span_us"], 1)
    return {"step_us": round((done[plan.ops[-1].seq] - t0) / 1e3, 1), "ops": kinds}


def timeline(h: Harness, mk: Monokernel, ctx: int, tag: str, one: int = 0) -> dict:
    """One traced step (the 7th of a launch) summed per op kind; raw stamps to
    $OUT/timeline-<tag>.npz."""
    tr = torch.zeros(h.plan.num_programs, mk.trace_rows(), NSTAMP.value, dtype=torch.int64,
                     device="cuda")
    start_at(h, ctx, 1 << 30, one)
    mk.launch(h.bufs, 8, trace=tr, trace_step=6)
    torch.cuda.synchronize()
    mk.check(h.bufs)
    raw = tr.cpu().numpy()
    if os.environ.get("OUT"):
        recs, offs = h.plan.table()
        np.savez_compressed(os.path.join(os.environ["OUT"], f"timeline-{tag}.npz"), trace=raw,
                            table=recs, offs=offs)
    return timeline_summary(h.plan, raw, one)


def breakdown(h: Harness, mk: Monokernel, ctx: int, steps: int, full: float,
              one: int = 0) -> dict:
    """us per step saved by skipping one op kind's compute (its loads, waits and releases
    kept; the LM head's loads go with its compute), and every op's ("sync_only_us"), in the
    variant's own kernel and step kind (T, one)."""
    bd = {"full_us": round(full, 2)}
    ops = [op for op in SKIPPABLE if any(o.opcode == op for o in h.plan.ops)]
    for name, mask in [(P.OP_NAMES[op], 1 << op) for op in ops] + [
            ("sync_only_us", sum(1 << op for op in ops))]:
        try:
            us = time_steps(h, mk, ctx, steps, skip=mask, one=one)
            bd[name] = round(us if name == "sync_only_us" else full - us, 2)
        except Exception as e:  # a variant whose skipped op leaves a wait unmet: say so
            bd[name] = f"{type(e).__name__}: {e}"[:200]
    return bd


def build(base: Harness, v: dict, sms: int, T: int, ctx: int) -> tuple[Harness, Monokernel]:
    tiling = P.Tiling(**{k: v[k] for k in TILING_KEYS if k in v})
    programs = v.get("programs") or v.get("per_sm", 2) * sms
    mtp = bool(v.get("mtp"))
    assert not mtp or base.mtp is not None, "an mtp variant needs the base built with a module"
    pl = P.plan(base.cfg, programs, T, base.max_len, tiling=tiling, context=ctx, mtp=mtp)
    bufs = W.alloc_buffers(pl, base.bufs.x.device, base.bufs.x.dtype, base.bufs.k_cache,
                           base.bufs.v_cache, hidden=base.cache.hidden if mtp else None)
    h = Harness(base.cfg, base.model, base.w, pl, bufs, base.cache, base.max_len, base.mtp)
    mk = Monokernel(h.plan, h.w, num_warps=v.get("warps", 4), maxnreg=v.get("maxnreg"),
                    reduce_chunks=bool(v.get("red", 0)), relaxed_release=v.get("relaxed", 0))
    start_at(h, ctx, 1 << 30)
    mk.launch(h.bufs, 2)  # compile + residency check
    torch.cuda.synchronize()
    mk.check(h.bufs)
    return h, mk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="qwen3-1.7b")
    ap.add_argument("--variants", default="")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--tsteps", default="")
    ap.add_argument("--contexts", default="")
    ap.add_argument("--timeline", action="store_true")
    args = ap.parse_args()
    dev = torch.cuda.get_device_properties(0)
    sms = dev.multi_processor_count
    bw = measure_copy_bandwidth("cuda")
    res: dict = {"device": dev.name, "copy_TBps": bw / 1e12, "shapes": {}}
    print(f"{dev.name}: copy {bw / 1e12:.3f} TB/s", flush=True)
    variants = [parse_variant(s) for s in args.variants.split(";")] if args.variants else [{}]
    contexts = [int(c) for c in args.contexts.split(",") if c]
    tsteps = [int(t) for t in args.tsteps.split(",") if t]
    for name in args.shapes.split(","):
        cfg = SHAPES[name]
        wbytes = cfg.decode_weight_bytes(2)
        roof = bw / wbytes
        max_len = max([args.ctx, *contexts]) + args.steps * 16 + 64
        torch.manual_seed(0)
        t0 = time.perf_counter()
        module = None
        if any(v.get("mtp") for v in variants):
            from agentfast.spec_decode import mtp as M

            def module(sd, cfg=cfg):
                return M.build_module(cfg, M.init_module(cfg, sd), 0, "cuda", torch.bfloat16)
        base = Harness.build(cfg, sms, 1, max_len, device="cuda", dtype=torch.bfloat16,
                             mtp=module)
        print(f"\n{name}: {wbytes / 1e9:.3f} GB of weights, roofline {roof:.0f} tok/s "
              f"(built in {time.perf_counter() - t0:.0f} s)", flush=True)
        rows: list[dict] = []
        best = None
        for v in variants:
            r = {"variant": v, "ctx": args.ctx, "T": v.get("T", 1)}
            try:
                h, mk = build(base, v, sms, v.get("T", 1), args.ctx)
                us = time_steps(h, mk, args.ctx, args.steps, one=v.get("one", 0))
                r.update(step_us=round(us, 2), tok_s=round(1e6 / us, 1),
                         roofline_frac=round(1e6 / us / roof, 3), blocks=h.plan.blocks,
                         stages={P.OP_NAMES[o]: h.plan.op_stages(o) for o in h.plan.blocks},
                         fit=mk.fit_info)
                if args.timeline:
                    r["timeline"] = timeline(h, mk, args.ctx, f"{name}-{len(rows)}",
                                             v.get("one", 0))
                if args.breakdown:
                    r["breakdown"] = breakdown(h, mk, args.ctx, args.steps, us,
                                               v.get("one", 0))
                if best is None or us < best[0]:
                    best = (us, v)
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {e}"[:400]
            rows.append(r)
            print(json.dumps(r, default=str), flush=True)
        if best is not None:
            v = best[1]
            for T in tsteps:
                r = {"variant": v, "ctx": args.ctx, "T": T}
                try:
                    h, mk = build(base, v, sms, T, args.ctx)
                    us = time_steps(h, mk, args.ctx, max(16, args.steps // T))
                    r.update(step_us=round(us, 2), vs_T1=round(us / best[0], 3))
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {e}"[:400]
                rows.append(r)
                print(json.dumps(r, default=str), flush=True)
            for ctx in contexts:
                r = {"variant": v, "ctx": ctx, "T": 1}
                try:
                    h, mk = build(base, v, sms, 1, ctx)
                    us = time_steps(h, mk, ctx, args.steps)
                    r.update(step_us=round(us, 2), tok_s=round(1e6 / us, 1),
                             roofline_frac=round(1e6 / us / roof, 3))
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {e}"[:400]
                rows.append(r)
                print(json.dumps(r, default=str), flush=True)
        res["shapes"][name] = {"weight_bytes": wbytes, "roofline_tok_s": roof, "rows": rows}
        del base
        torch.cuda.empty_cache()
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "tune.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
