"""Agent-loop bench: replays a scripted multi-turn coding session through the real agent loop
and reports, per turn, where the wall time goes: prefill, decode, tools, and the rest (host:
the agent loop, the in-process OpenAI client, the server's prompt rendering, tokenizing,
queueing and streaming). The bar is host overhead <= 1 ms per turn.

    python -m agentfast.agent.bench                      # embedded model, CPU or GPU
    python -m agentfast.agent.bench -m ~/models/Qwen3-1.7B --json bench/results/agent_loop.json

The model's turns are forced, not free: each generation runs the real model (prefill of the new
tokens, one forward per generated token, on the session's KV cache) under a `choice`
constraint that admits exactly the scripted text (a tool call in the Hermes format, or the
final answer), so every run is the same session whatever the model. The tools are the real
workspace tools (agentfast.agent.coding) on a small repo with a failing test: list_dir,
read_file + shell (one turn, two concurrent calls), run_tests, edit, run_tests, answer.

Per turn: prefill = the engine's time to first token (prefill + first sample), decode = first
to last token, tool = the time during which at least one of the turn's tool functions ran
(they run concurrently: the union of the functions' own spans, so dispatching them, i.e. the
argument validation, the timeout scope and any worker-thread hop, is host time), wall = from
the end of the previous turn (or the start of the run) to the end of this one, host = wall -
prefill - decode - tool. A warm-up run first (constraint compilation, the template's
append-only probe, the KV cache that each run's new session then takes over from the last),
then gc.freeze() (a long-running agent process should do the same once it has loaded its
model: a full garbage collection over the ~200k objects of torch, the model and the server
takes ~80 ms) and a second unmeasured run (the collection leaves the CPU caches cold for the
next run's first turns), then `--runs` measured runs; the table shows the last run, the JSON
has all.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

REPO = {
    "calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "test_calc.py": ("from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
                     "\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"),
}
TASK = "The test test_add in test_calc.py fails. Find the bug and fix it."


def _call(name: str, **arguments: Any) -> str:
    return ("<tool_call>\n" + json.dumps({"name": name, "arguments": arguments})
            + "\n</tool_call>")


# The replayed session: each entry is what the model "says" on that turn.
SCRIPT = [
    _call("list_dir", path="."),
    _call("read_file", path="calc.py") + "\n" + _call("shell", command="grep -n add test_calc.py"),
    _call("run_tests", path=""),
    _call("edit", path="calc.py", search="return a - b", replace="return a + b"),
    _call("run_tests", path=""),
    "Fixed: add() subtracted its arguments; it adds them now and the tests pass.",
]


class ReplayEngine:
    """An Engine whose generations are forced to the next scripted text (a `choice`
    constraint, greedy: the model runs, the output is fixed; the agent's sampling settings are
    replaced by these, built once). Everything else is the wrapped engine's; `results` collects
    each generation's GenerationResult (prefill / decode timings)."""

    def __init__(self, engine: Any, script: list[str]):
        from agentfast.engine import SamplingParams
        from agentfast.engine.constraints import choice, compile

        self._engine, self.script = engine, list(script)
        self.params = []
        for t in script:
            c = choice([t])
            compile(c, engine.tokenizer, tuple(engine.eos_ids))  # now, not in the measured run
            n = len(engine.tokenizer.encode(t, add_special=False))
            self.params.append(SamplingParams(max_tokens=n + 16, temperature=0.0, constraint=c))
        self.generations: list[Any] = []
        self.started: list[float] = []  # perf_counter when the scheduler asked for each one
        self.next = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def rewind(self) -> None:
        self.next, self.generations, self.started = 0, [], []

    def stream(self, prompt: Any, params: Any = None, session: str | None = None,
               **kw: Any) -> Any:
        assert self.next < len(self.script), "the agent asked for more turns than scripted"
        params = self.params[self.next]
        self.next += 1
        self.started.append(time.perf_counter())
        g = self._engine.stream(prompt, params, session, **kw)
        self.generations.append(g)
        return g

    @property
    def results(self) -> list[Any]:
        return [g.result for g in self.generations]


async def run_once(agent: Any, engine: ReplayEngine, workdir: Path) -> list[dict]:
    """One replayed session in a fresh copy of the repo; per-turn rows (computed after the run:
    during it, each turn's end is only timestamped)."""
    from .events import RunFinished, ToolResult, TurnFinished

    for name, text in REPO.items():
        (workdir / name).write_text(text)
    engine.rewind()
    ends: list[tuple[TurnFinished, float]] = []
    ok_tools: list[bool] = []
    start = time.perf_counter()
    async for ev in agent.run_stream(TASK):  # a new session, released at the end of the run
        if isinstance(ev, TurnFinished):
            ends.append((ev, time.perf_counter()))
        elif isinstance(ev, ToolResult):
            ok_tools.append(ev.ok)
        elif isinstance(ev, RunFinished):
            assert ev.result.turns == len(SCRIPT), "the replay went off script"
    assert all(ok_tools), "a scripted tool call failed"
    assert "return a + b" in (workdir / "calc.py").read_text(), "the scripted edit was lost"
    rows: list[dict] = []
    last = start
    for (ev, now), r, started in zip(ends, engine.results, engine.started, strict=True):
        tt = ev.trace
        wall, pre, model = now - last, started - last, r.ttft_s + r.decode_s
        last = now
        rows.append({
            "turn": ev.turn, "tool_calls": ev.tool_calls, "prompt_tokens": r.prompt_tokens,
            "prefilled_tokens": r.prefilled_tokens, "reused_tokens": r.reused_tokens,
            "output_tokens": len(r.token_ids), "prefill_ms": r.ttft_s * 1e3,
            "decode_ms": r.decode_s * 1e3, "tool_ms": tt.tool_s * 1e3, "wall_ms": wall * 1e3,
            "host_ms": (wall - model - tt.tool_s) * 1e3,
            # host before the engine starts (prompt rendering, tokenizing, queueing) and
            # after it ends (parsing, tool dispatch, appending results)
            "host_pre_ms": pre * 1e3, "host_post_ms": (wall - model - tt.tool_s - pre) * 1e3,
            "client_model_ms": tt.model_s * 1e3,  # request sent -> last chunk, client side
        })
    return rows


def table(rows: list[dict]) -> str:
    cols = [("turn", "{:>4}"), ("tool_calls", "{:>5}"), ("prompt_tokens", "{:>6}"),
            ("prefilled_tokens", "{:>9}"), ("reused_tokens", "{:>6}"),
            ("output_tokens", "{:>4}"), ("prefill_ms", "{:>10.1f}"), ("decode_ms", "{:>9.1f}"),
            ("tool_ms", "{:>8.1f}"), ("wall_ms", "{:>9.1f}"), ("host_ms", "{:>7.2f}"),
            ("host_pre_ms", "{:>6.2f}"), ("host_post_ms", "{:>6.2f}")]
    heads = ["turn", "calls", "prompt", "prefilled", "reused", "out", "prefill_ms", "decode_ms",
             "tool_ms", "wall_ms", "host_ms", "(pre", "post)"]
    widths = [len(f.format(0)) for _, f in cols]
    out = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    for r in rows:
        out.append("  ".join(f.format(r[k]) for k, f in cols))
    return "\n".join(out)


def summarize(runs: list[list[dict]]) -> dict:
    host = [r["host_ms"] for rows in runs for r in rows]
    per_run = [sum(r["host_ms"] for r in rows) / len(rows) for rows in runs]
    # the bar is per turn: every turn's host time (so the median and the max) within it
    return {"turns_per_run": len(runs[-1]), "host_ms_mean": statistics.fmean(host),
            "host_ms_median": statistics.median(host), "host_ms_max": max(host),
            "host_ms_mean_per_run": per_run, "bar_ms": 1.0, "meets_bar": max(host) <= 1.0}


async def bench(engine: Any, runs: int = 3, max_concurrent_tools: int = 4,
                gc_freeze: bool = True) -> dict:
    from .agent import Agent
    from .coding import Workspace

    replay = ReplayEngine(engine, SCRIPT)
    with tempfile.TemporaryDirectory(prefix="agentfast-bench-") as d:
        ws = Workspace(d, test_timeout=60)
        agent = Agent(replay, instructions="You are a coding agent. Use the tools.",
                      tools=ws.tools(), max_turns=len(SCRIPT) + 1, tool_timeout=90,
                      max_concurrent_tools=max_concurrent_tools,
                      settings={"temperature": 0, "max_tokens": 256})
        await run_once(agent, replay, Path(d))  # warm-up
        if gc_freeze:
            # everything alive now (the model, torch, the server modules: ~200k objects) leaves
            # the collector's view; a full collection over them takes ~80 ms on CPU here
            gc.collect()
            gc.freeze()
            # and flushes the CPU caches: the next run's first turns ran 1.1-2.5 ms (H200
            # machine, session 9), a cost of this one-time freeze, not of a turn
            await run_once(agent, replay, Path(d))
        all_rows = [await run_once(agent, replay, Path(d)) for _ in range(runs)]
    return {"runs": all_rows, "summary": summarize(all_rows)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agentfast.agent.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="checkpoint (default: embedded model)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--runs", type=int, default=3, help="measured runs after one warm-up")
    ap.add_argument("--json", default=None, help="write the rows and summary here")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="leave the garbage collector as it is (default: gc.freeze() after the "
                    "warm-up)")
    args = ap.parse_args(argv)
    from agentfast.engine import Engine

    kw = {"backend": args.backend}
    if args.device:
        kw["device"] = args.device
    engine = Engine.load(args.model, **kw)
    out = anyio.run(bench, engine, args.runs, 4, not args.no_gc_freeze)
    s = out["summary"]
    print(table(out["runs"][-1]))
    print(f"host overhead per turn: mean {s['host_ms_mean']:.3f} ms, median "
          f"{s['host_ms_median']:.3f} ms, max {s['host_ms_max']:.3f} ms over {args.runs} runs "
          f"x {s['turns_per_run']} turns (bar {s['bar_ms']} ms: "
          f"{'met' if s['meets_bar'] else 'NOT met'})")
    if args.json:
        meta = {"model": str(getattr(engine.model, "source", args.model)),
                "gc_freeze": not args.no_gc_freeze,
                "backend": engine.backend.name, "device": str(engine.device),
                "machine": platform.machine(), "python": platform.python_version()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**meta, **out}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
