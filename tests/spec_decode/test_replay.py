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


def test_projection_at_the_qwen3_shape_step_costs():
    """A replay's counts at another model's step costs: verification steps at cost(T), the
    other forwards at one step, drafted tokens at the drafter's cost; plain decode one step per
    token."""
    from agentfast.spec_decode.replay import PROJECTION, ReplayReport, projected

    _, us, costs = PROJECTION
    # 100 tokens: 20 verification steps kept 60 drafts, 20 more forwards plain
    r = ReplayReport("x", tokens=100, steps=20, drafted=80, accepted=60)
    assert r.forwards == 40
    p = projected(r, 9)
    t9 = costs[8] + (costs[16] - costs[8]) / 8  # the table between T = 8 and 16
    assert p["speedup"] == pytest.approx(100 / (20 * t9 + 20), abs=1e-3)
    assert p["tokens_per_s"] == pytest.approx(100 / ((20 * t9 + 20) * us * 1e-6), abs=0.1)
    assert p["plain_tokens_per_s"] == pytest.approx(1e6 / us, abs=0.1)
    slow = projected(r, 9, draft_cost=0.25)  # 80 drafts cost 20 more steps
    assert slow["speedup"] == pytest.approx(100 / (20 * t9 + 40), abs=1e-3)
    assert projected(ReplayReport("x", 10, 0, 0, 0), 4)["speedup"] == 1.0  # no drafting: plain
    assert projected(ReplayReport("x", 0, 0, 0, 0), 4)["speedup"] is None


def test_tool_turns_under_the_tool_call_grammar(pair):
    """With tools, a turn the script has as a JSON tool call is generated under the tool-call
    grammar of the trace's declared tools (tool_choice required); prose turns stay free; the
    drafter's output equals plain decode under the same constraint."""
    from agentfast.spec_decode.replay import is_tool_call, turn_params

    spec, plain = pair
    trace = next(t for t in load_traces() if t["name"] == "repeat_tool_output")
    turns = [i for i, m in enumerate(trace["messages"]) if m["role"] == "assistant"]
    kinds = [is_tool_call(trace["messages"][i]["content"]) for i in turns]
    assert kinds == [True, False], kinds
    assert turn_params(trace, turns[0], 24).constraint is None  # tools off: as before
    con = turn_params(trace, turns[0], 24, tools=True).constraint
    assert con is not None and con.kind == "tool_call" and "run" in con.spec
    assert turn_params(trace, turns[1], 24, tools=True).constraint is None
    r = replay(spec, trace, max_tokens=40, tools=True)
    first = spec.tokenizer.decode(r.outputs[0])
    assert first.startswith("<tool_call>\n{"), first  # the grammar's forced opening
    msgs = trace["messages"][:turns[0]]
    p = turn_params(trace, turns[0], 40, tools=True)
    assert spec.chat(msgs, p).token_ids == plain.chat(msgs, p).token_ids == r.outputs[0]
