"""Trace replay: every trace loads, the forced replay finds copyable text, the engine replay
runs with a drafter and its greedy output equals the engine without one."""

from __future__ import annotations

import pytest

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.errors import ModelLoadError, RequestError
from agentfast.spec_decode import NgramDrafter
from agentfast.spec_decode.replay import load_traces, replay, replay_forced


@pytest.fixture(scope="module")
def pair(llama_dir) -> tuple[Engine, Engine]:
    return (Engine.load(str(llama_dir), device="cpu", drafter=NgramDrafter()),
            Engine.load(str(llama_dir), device="cpu"))


def test_traces_load():
    traces = load_traces()
    assert {t["name"] for t in traces} >= {"edit_file", "repeat_tool_output", "json_tool_call",
                                           "plain_chat"}
    for t in traces:
        assert any(m["role"] == "assistant" for m in t["messages"]), t["name"]


def test_forced_replay_accepts_copies(pair):
    tok = pair[1].tokenizer
    reports = {t["name"]: replay_forced(NgramDrafter(), tok, t) for t in load_traces()}
    for name in ("edit_file", "repeat_tool_output", "json_tool_call"):  # a third fewer forwards
        r = reports[name]
        assert r.mean_accepted > 1 and r.forwards < 0.75 * r.tokens, r
    for r in reports.values():
        assert r.accepted <= r.drafted and r.forwards <= r.tokens


def test_engine_replay_and_equality(pair):
    spec, plain = pair
    trace = next(t for t in load_traces() if t["name"] == "repeat_tool_output")
    r = replay(spec, trace, max_tokens=24)
    assert r.tokens > 0 and r.accepted <= r.drafted
    msgs = trace["messages"][:3]
    p = SamplingParams(max_tokens=24, temperature=0.0)
    assert spec.chat(msgs, p).token_ids == plain.chat(msgs, p).token_ids
    assert spec.chat(msgs, p, session="s").token_ids == plain.chat(msgs, p).token_ids


def test_drafter_refused_by_other_backends(llama_dir):
    with pytest.raises((RequestError, ModelLoadError, RuntimeError)):
        Engine.load(str(llama_dir), device="cpu", backend="graph", drafter=NgramDrafter())
