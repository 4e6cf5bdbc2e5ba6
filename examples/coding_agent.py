"""A coding agent: read_file, write_file, edit (search/replace), list_dir, run_tests (pytest, with
a timeout) and a restricted shell, all confined to one workspace folder (paths that lead out,
by `..`, an absolute path or a symlink, are refused with a tool error the model reads).

    python examples/coding_agent.py examples/tasks/fizzbuzz      # embedded model, a temp copy
    python examples/coding_agent.py examples/tasks/stack -m ~/models/Qwen3-8B --max-turns 20
    agentfast serve -m ~/models/Qwen3-8B &                       # or any OpenAI-compatible URL
    python examples/coding_agent.py examples/tasks/slugify --base-url http://127.0.0.1:8000/v1
    python examples/coding_agent.py --workspace ./myrepo --task "Make the tests pass"

A task folder holds a small repo and its task.md; it is copied to a temporary workspace (or
`--copy-to DIR`) so the original stays as it is; `--workspace DIR` works in place. At the end
the workspace's tests run once more and say whether the task is solved. The embedded 135M model
is far too small to solve these; it shows the loop, the tools and the trace.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from agentfast.agent import (
    Agent,
    MaxTurnsExceeded,
    RunFinished,
    TextDelta,
    ToolCallStarted,
    ToolResult,
    Trace,
    TurnFinished,
)
from agentfast.agent.coding import Workspace

INSTRUCTIONS = """You are a careful coding agent working in a small Python repository.
Use the tools: list_dir and read_file to look around, run_tests to run pytest, edit to change a
file (search must match the file exactly once) or write_file to rewrite it, shell for read-only
commands (ls, grep, find, ...). Paths are relative to the repository root. Fix the code, not the
tests. When the tests pass, answer with a one-line summary of the fix."""


@dataclass
class Outcome:
    workspace: Path
    solved: bool  # the workspace's tests pass at the end
    final_output: str | None  # the model's last answer (None when it ran out of turns)
    events: list[Any] = field(default_factory=list)
    trace: Trace | None = None
    tests: str = ""


def prepare(task_dir: str | None, workspace: str | None, copy_to: str | None,
            task: str | None) -> tuple[Path, str]:
    """(workspace folder, task text)."""
    if workspace:
        ws = Path(workspace)
    elif task_dir:
        ws = Path(copy_to or tempfile.mkdtemp(prefix="agentfast-task-")) / Path(task_dir).name
        shutil.copytree(task_dir, ws, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    else:
        raise SystemExit("give a task folder (examples/tasks/NAME) or --workspace DIR")
    if task is None:
        md = ws / "task.md"
        if not md.is_file():
            raise SystemExit(f"no --task and no task.md in {ws}")
        task = md.read_text()
    return ws, task


def model_target(model: str | None, base_url: str | None, api_key: str, engine: Any) -> Any:
    """What Agent() takes: an engine (direct), a checkpoint path, or an OpenAI client."""
    if base_url:
        import openai

        return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    return engine if engine is not None else model  # None: the embedded model


async def solve(workspace: Path, task: str, target: Any = None, *, model_name: str = "default",
                max_turns: int = 12, max_tokens: int = 512, temperature: float = 0.0,
                test_timeout: float = 60.0, first_tool_choice: str | None = "required",
                echo: bool = True) -> Outcome:
    ws = Workspace(workspace, test_timeout=test_timeout)
    agent = Agent(target, instructions=INSTRUCTIONS, tools=ws.tools(), max_turns=max_turns,
                  tool_timeout=test_timeout + 10, model=model_name,
                  settings={"max_tokens": max_tokens, "temperature": temperature})
    out = Outcome(workspace, False, None)

    def say(*a: Any, **kw: Any) -> None:
        if echo:
            print(*a, **kw, flush=True)

    say(f"workspace: {workspace}\ntask: {task.strip()}\n")
    try:
        # small models rarely start with a tool call unprompted: force one on turn 1
        async for ev in agent.run_stream(task, first_tool_choice=first_tool_choice):
            out.events.append(ev)
            if isinstance(ev, TextDelta):
                say(ev.text, end="")
            elif isinstance(ev, ToolCallStarted):
                say(f"\n[{ev.turn}] {ev.name}({ev.arguments})")
            elif isinstance(ev, ToolResult):
                head = ev.output if len(ev.output) < 400 else ev.output[:400] + " ..."
                say(f"    -> {'ok' if ev.ok else 'error'} in {ev.seconds * 1e3:.0f} ms: {head}")
            elif isinstance(ev, TurnFinished):
                t = ev.trace
                say(f"    (turn {ev.turn}: {t.prefilled_tokens} prefilled, {t.cached_tokens} "
                    f"reused, {t.completion_tokens} generated, {t.model_s:.2f} s model)")
            elif isinstance(ev, RunFinished):
                out.final_output, out.trace = ev.output, ev.result.trace
    except MaxTurnsExceeded as e:
        out.trace = e.result.trace
        say(f"\nstopped: {e}")
    out.tests = ws.run_tests("")
    out.solved = out.tests.startswith("pytest: all tests passed")
    say(f"\n{out.tests.splitlines()[0]} -> {'SOLVED' if out.solved else 'not solved'}")
    if out.trace is not None:
        say(out.trace.summary())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task_dir", nargs="?", help="a task folder (a repo with task.md)")
    ap.add_argument("--workspace", help="work in place in this folder instead of a copy")
    ap.add_argument("--copy-to", help="copy the task folder under this folder (default: a temp)")
    ap.add_argument("--task", help="the task text (default: the workspace's task.md)")
    ap.add_argument("-m", "--model", help="a checkpoint path (embedded model by default), or "
                    "the model name to send with --base-url (default: 'default')")
    ap.add_argument("--base-url", help="an OpenAI-compatible server, e.g. agentfast serve's "
                    "http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--max-turns", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("-t", "--temperature", type=float, default=0.0)
    ap.add_argument("--test-timeout", type=float, default=60.0)
    ap.add_argument("--trace-json", help="write the per-turn trace here")
    args = ap.parse_args(argv)
    ws, task = prepare(args.task_dir, args.workspace, args.copy_to, args.task)
    target = model_target(None if args.base_url else args.model, args.base_url, args.api_key,
                          None)
    name = (args.model or "default") if args.base_url else "default"
    out = anyio.run(lambda: solve(ws, task, target, model_name=name, max_turns=args.max_turns,
                                  max_tokens=args.max_tokens, temperature=args.temperature,
                                  test_timeout=args.test_timeout))
    if args.trace_json and out.trace is not None:
        Path(args.trace_json).write_text(json.dumps(json.loads(out.trace.to_json()), indent=1))
    return 0 if out.solved else 1


if __name__ == "__main__":
    sys.exit(main())
