"""Where a replayed turn's decode time goes: the monokernel's launches against the host.

    python bench/probes/turn_time/turn_time.py --device cuda [--drafter ngram] [-n 128] \
        [--trace edit_file] [--costs "1:573,2:697,16:1301"] [--json FILE]

Replays the agent trace set (spec_decode/traces) as `spec_decode.replay` does, greedy, on the
monokernel backend, with every kernel launch timed on the device (a CUDA event recorded before
the launch call, one after it: the device time from there to the kernel's end, which also holds
what the launch call itself takes on the host while the device waits; on CPU, host clocks around
the call) and counted. Per turn: the decode time the engine reports (first token to last), the
launches' device time, the rest (host: setup, drafting, polling, reads of the device state; and
the gaps between launches), the launches, and the steps by width (the drafter's counts); with
--costs (us per step by positions: one-position, narrow, wide, as `tune` measures them), the
decode those steps would take at those costs, so that kernel time above it is what switching
widths costs in a real sequence (cold code paths, the first step of a launch) and decode time
above the kernel's is the host's. The question it answers: session 18's replay decoded 5% slower
than its steps at tune's costs (BENCH.md, session 19).
"""

from __future__ import annotations

import argparse
import json
import time


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
    drafter = None if args.drafter == "none" else args.drafter
    eng = Engine.load(args.model, device=args.device, backend="monokernel", drafter=drafter)
    traces = [t for t in load_traces()
              if not args.trace or any(t["name"].startswith(p) for p in args.trace)]
    rows = []
    for tr in traces:
        for i in _assistant_turns(tr):
            d = eng.drafter
            w0 = dict(getattr(d, "widths", {})) if d is not None else {}
            spans.clear()
            r = eng.chat(tr["messages"][:i], turn_params(tr, i, args.max_tokens),
                         session=f"tt-{tr['name']}")
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
                   "decode_ms": round(r.decode_s * 1e3, 3), "kernel_ms": round(kernel_s * 1e3, 3),
                   "host_ms": round((r.decode_s - kernel_s) * 1e3, 3), "launches": len(spans),
                   "widths": widths}
            if costs:
                missing = sorted(set(widths) - set(costs))
                if missing:
                    raise SystemExit(f"--costs has no cost for steps of {missing} positions")
                row["steps_ms"] = round(sum(costs[w] * n for w, n in widths.items()) / 1e3, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
        eng.sessions.drop(f"tt-{tr['name']}")
    tot = {k: round(sum(r[k] for r in rows), 3) for k in ("decode_ms", "kernel_ms", "host_ms")}
    tot["launches"] = sum(r["launches"] for r in rows)
    tot["tokens"] = sum(r["tokens"] for r in rows)
    if costs:
        tot["steps_ms"] = round(sum(r["steps_ms"] for r in rows), 3)
    print("total", json.dumps(tot))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if cuda else "cpu",
                       "drafter": args.drafter, "costs_us": costs, "turns": rows,
                       "total": tot}, f, indent=1)


if __name__ == "__main__":
    main()
