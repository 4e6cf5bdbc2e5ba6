"""Where a replayed turn's decode time goes: the monokernel's launches against the host.

    python bench/probes/turn_time/turn_time.py --device cuda [--drafter ngram] [-n 128] \
        [--trace edit_file] [--costs "1:573,2:697,16:1301"] [--json FILE]

Replays the agent trace set (spec_decode/traces) as `spec_decode.replay` does, greedy, on the
monokernel backend, with every kernel launch timed on the device (a CUDA event recorded before the
launch call, one after it: the device time from there to the kernel's end, which also holds what the
launch call itself takes on the host while the device waits; on CPU, host clocks around the call)
and counted. Per turn: the decode time the engine reports (first token to last), the launches'
device time, the rest (host: setup, drafting, polling, reads of the device state; and the gaps
between launches), the launches, the call's wall time (wall - ttft - decode: the engine's work
before its clock starts and after the last token), and the steps by width (the drafter's counts);
with --costs (us per step by positions: one-position, narrow, wide, as `tune` measures them), the
decode those steps would take at those costs, so that kernel time above it is what switching widths
costs in a real sequence (cold code paths, the first step of a launch) and decode time above the
kernel's is the host's. The question it answers: session 18's replay decoded 5% slower than its
steps at tune's costs (BENCH.md, session 19). `--stages`: the host time of each named
stage (the backend's setup before a launch, the drafter's lookup, the engine's per-token work),
per turn, to say where the host part goes (session 20: 0.9-1.9 ms a drafting turn against
0.45-0.7 ms of plain decode).
"""

from __future__ import annotations

import argparse
import json
import time

STAGES = [  # (module or class path, attribute): host work inside a turn's decode time
    ("agentfast.engine.engine:Engine", "encode_chat"),  # (before the TTFT's clock)
    ("agentfast.spec_decode.drafters:NgramDrafter", "begin"),  # (in the TTFT)
    ("agentfast.engine.backends.monokernel", "propose_drafts"),
    ("agentfast.engine.backends.monokernel", "_confidence"),
    ("agentfast.engine.backends.monokernel", "draft_policy"),
    ("agentfast.engine.backends.monokernel:MonokernelBackend", "_buffers"),
    ("agentfast.engine.backends.monokernel:MonokernelBackend", "_kernel_for"),
    ("agentfast.engine.backends.monokernel:MonokernelBackend", "_fill_module"),
    ("agentfast.kernels.monokernel.weights", "start_sequence"),
    ("agentfast.kernels.monokernel.weights", "start_drafting"),
    ("agentfast.kernels.monokernel.weights", "set_step_inputs"),
    ("agentfast.kernels.monokernel.weights", "start_mtp"),
    ("agentfast.kernels.monokernel.kernel:Monokernel", "check"),
    ("agentfast.engine.engine:IncrementalDecoder", "push"),
    ("agentfast.engine.engine:StopMatcher", "push"),
]


def _time_stage(owner: str, name: str, acc: dict[str, float]) -> None:
    """Wrap owner.name (a module function or a class's method, looked up at call time by its
    callers) so that each call adds its host time to acc["[Class.]name"]; nested stages count
    in both."""
    import functools
    import importlib

    mod, _, cls = owner.partition(":")
    obj = importlib.import_module(mod)
    if cls:
        obj = getattr(obj, cls)
    fn = getattr(obj, name)
    key = f"{cls}.{name}" if cls else name

    @functools.wraps(fn)
    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0

    setattr(obj, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="default: the embedded model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--drafter", default="ngram", help="a drafter spec, or 'none': plain decode")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--trace", action="append", help="trace name or prefix (default: all)")
    ap.add_argument("--costs", default=None,
                    help="us per step by positions, e.g. 1:573,2:697,16:1301 (tune's figures)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--stages", action="store_true",
                    help="time the host's stages per turn (STAGES)")
    args = ap.parse_args()

    try:
        costs = ({int(t): float(c) for t, c in (kv.split(":") for kv in args.costs.split(","))}
                 if args.costs else None)
    except ValueError:
        ap.error(f"--costs {args.costs!r}: positions:us pairs, e.g. 1:573,2:697,16:1301")

    import torch

    from agentfast.engine import Engine
    from agentfast.kernels.monokernel import kernel as K
    from agentfast.spec_decode.replay import _assistant_turns, load_traces, turn_params

    cuda = args.device.startswith("cuda")
    spans: list = []  # per launch: (start, end) events on CUDA, seconds on CPU
    launch = K.Monokernel.launch

    def timed(self, *a, **kw):
        if cuda:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            launch(self, *a, **kw)
            t1.record()
            spans.append((t0, t1))
        else:
            c0 = time.perf_counter()
            launch(self, *a, **kw)
            spans.append(time.perf_counter() - c0)

    K.Monokernel.launch = timed
    stage_s: dict[str, float] = {}
    if args.stages:
        for owner, name in STAGES:
            _time_stage(owner, name, stage_s)
    drafter = None if args.drafter == "none" else args.drafter
    eng = Engine.load(args.model, device=args.device, backend="monokernel", drafter=drafter)
    traces = [t for t in load_traces()
              if not args.trace or any(t["name"].startswith(p) for p in args.trace)]
    rows = []
    if traces:  # one turn unmeasured first: the kernels' compiles and first launches
        first = traces[0]
        i = next(iter(_assistant_turns(first)))
        eng.chat(first["messages"][:i], turn_params(first, i, args.max_tokens), session="tt-warm")
        eng.sessions.drop("tt-warm")
    for tr in traces:
        for i in _assistant_turns(tr):
            d = eng.drafter
            w0 = dict(getattr(d, "widths", {})) if d is not None else {}
            spans.clear()
            stage_s.clear()
            c0 = time.perf_counter()
            r = eng.chat(tr["messages"][:i], turn_params(tr, i, args.max_tokens),
                         session=f"tt-{tr['name']}")
            wall_s = time.perf_counter() - c0
            if cuda:
                torch.cuda.synchronize()
                kernel_s = sum(a.elapsed_time(b) for a, b in spans) / 1e3
            else:
                kernel_s = sum(spans)
            widths = {w: n - w0.get(w, 0) for w, n in getattr(d, "widths", {}).items()
                      if n - w0.get(w, 0)} if d is not None else {}
            if d is None:  # plain decode: one-position steps
                widths = {1: max(len(r.token_ids) - 1, 0)}
            row = {"trace": tr["name"], "turn": i, "tokens": len(r.token_ids),
                   "wall_ms": round(wall_s * 1e3, 3), "ttft_ms": round(r.ttft_s * 1e3, 3),
                   "decode_ms": round(r.decode_s * 1e3, 3), "kernel_ms": round(kernel_s * 1e3, 3),
                   "host_ms": round((r.decode_s - kernel_s) * 1e3, 3), "launches": len(spans),
                   "widths": widths}
            if args.stages:
                row["stages_ms"] = {k: round(v * 1e3, 3) for k, v in stage_s.items()}
            if costs:
                missing = sorted(set(widths) - set(costs))
                if missing:
                    raise SystemExit(f"--costs has no cost for steps of {missing} positions")
                row["steps_ms"] = round(sum(costs[w] * n for w, n in widths.items()) / 1e3, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
        eng.sessions.drop(f"tt-{tr['name']}")
    tot = {k: round(sum(r[k] for r in rows), 3)
           for k in ("wall_ms", "ttft_ms", "decode_ms", "kernel_ms", "host_ms")}
    tot["launches"] = sum(r["launches"] for r in rows)
    tot["tokens"] = sum(r["tokens"] for r in rows)
    if costs:
        tot["steps_ms"] = round(sum(r["steps_ms"] for r in rows), 3)
    if args.stages:
        st: dict[str, float] = {}
        for r in rows:
            for k, v in r["stages_ms"].items():
                st[k] = round(st.get(k, 0.0) + v, 3)
        tot["stages_ms"] = st
    print("total", json.dumps(tot))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if cuda else "cpu",
                       "drafter": args.drafter, "costs_us": costs, "turns": rows,
                       "total": tot}, f, indent=1)


if __name__ == "__main__":
    main()
