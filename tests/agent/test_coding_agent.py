"""examples/coding_agent.py end to end on the embedded model (SmolLM2-135M: it will not solve the
task; the run must complete mechanically): the tool calls parse and execute, the events come in
order, nothing outside the workspace changes, the original task folder is left as it was."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agentfast.agent import RunFinished, TextDelta, ToolCallStarted, ToolResult, TurnFinished

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "examples" / "tasks"


def load_example():
    import sys

    if "coding_agent" in sys.modules:
        return sys.modules["coding_agent"]
    spec = importlib.util.spec_from_file_location("coding_agent", ROOT / "examples" /
                                                  "coding_agent.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["coding_agent"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def check_event_order(events: list) -> None:
    """Per turn: TextDelta*, ToolCallStarted*, ToolResult* (one per call), TurnFinished; turns
    count up; RunFinished, if any, last."""
    turn, phase, started, results = 1, 0, [], []
    rank = {TextDelta: 0, ToolCallStarted: 1, ToolResult: 2}
    for i, ev in enumerate(events):
        if isinstance(ev, RunFinished):
            assert i == len(events) - 1
            continue
        assert ev.turn == turn, f"event {i} {ev} out of turn {turn}"
        if isinstance(ev, TurnFinished):
            assert ev.tool_calls == len(started) == len(results)
            assert sorted(r.call_id for r in results) == sorted(s.call_id for s in started)
            turn, phase, started, results = turn + 1, 0, [], []
            continue
        assert rank[type(ev)] >= phase, f"event {i} {type(ev).__name__} after phase {phase}"
        phase = rank[type(ev)]
        (started if isinstance(ev, ToolCallStarted) else
         results if isinstance(ev, ToolResult) else []).append(ev)


def test_task_set_is_valid(tmp_path):
    """Each example task: a task.md and a repo whose tests fail before the fix."""
    import shutil

    from agentfast.agent.coding import Workspace

    names = sorted(p.name for p in TASKS.iterdir() if p.is_dir())
    assert 3 <= len(names) <= 5
    for name in names:
        assert (TASKS / name / "task.md").read_text().strip()
        shutil.copytree(TASKS / name, tmp_path / name)  # pytest leaves caches behind
        out = Workspace(tmp_path / name).run_tests("")
        assert out.startswith("pytest: some tests failed"), (name, out)


async def test_coding_agent_on_the_embedded_model(embedded_engine, tmp_path):
    ex = load_example()
    original = {p: p.read_bytes() for p in (TASKS / "fizzbuzz").rglob("*") if p.is_file()
                and "__pycache__" not in p.parts}
    outside = tmp_path / "outside.txt"
    outside.write_text("do not touch")
    ws, task = ex.prepare(str(TASKS / "fizzbuzz"), None, str(tmp_path / "work"), None)
    assert task.startswith("# fizzbuzz")
    out = await ex.solve(ws, task, embedded_engine, max_turns=3, max_tokens=48,
                         test_timeout=30, echo=False)
    events = out.events
    check_event_order(events)
    calls = [e for e in events if isinstance(e, ToolCallStarted)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert calls, "turn 1 forces a tool call"
    names = {"read_file", "write_file", "edit", "list_dir", "run_tests", "shell"}
    for c in calls:
        assert c.name in names  # the strict grammar only allows the tools' names
    for r in results:
        # every call ran: its result is the tool's output, or an error the model can read
        assert r.ok or r.output.startswith("Error: ")
    for c, r in zip(calls, sorted(results, key=lambda r: [x.call_id for x in calls]
                                  .index(r.call_id)), strict=True):
        try:
            json.loads(c.arguments)
        except json.JSONDecodeError:  # cut by max_tokens: refused before the call
            assert r.output.startswith(f"Error: invalid arguments for {c.name}")
    assert out.trace is not None and out.trace.turns[0].prompt_tokens > 0
    if len(out.trace.turns) > 1:
        assert out.trace.turns[1].cached_tokens > 0  # the session's KV was reused
    # confinement held, the task folder is the original, the final test run happened
    assert outside.read_text() == "do not touch"
    assert {p: p.read_bytes() for p in original} == original
    assert out.tests.startswith("pytest: ")
