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
    # a switching kernel's steps by width: each at its own cost; the forwards outside the
    # kernel (here 3: the turns' first tokens from the prefill) at one step
    r.widths = {16: 5, 2: 12, 1: 20}
    want = 5 * costs[16] + 12 * costs[2] + 20 + 3
    assert projected(r, 16)["speedup"] == pytest.approx(100 / want, abs=1e-3)
    # an MTP module in the kernel: its layer on every step, its head on some (mtp_fractions:
    # the shape's one layer + input projection, and its LM head, over its whole step)
    from agentfast.spec_decode.replay import mtp_fractions

    f_layer, f_head = mtp_fractions()
    assert 0.02 < f_layer < 0.05 and 0.1 < f_head < 0.3  # (Qwen3-1.7B: 28 layers, 152k vocab)
    extra = 37 * f_layer + 25 * f_head
    assert projected(r, 16, extra_steps=extra)["speedup"] == pytest.approx(
        100 / (want + extra), abs=1e-3)
    r2 = ReplayReport("y", tokens=10, steps=1, drafted=2, accepted=1, widths={2: 1})
    r.add(r2)
    assert r.widths == {16: 5, 2: 13, 1: 20}


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


def test_first_divergence():
    from agentfast.spec_decode.replay import first_divergence

    assert first_divergence([[1, 2], [3]], [[1, 2], [3]]) is None
    assert first_divergence([[1, 2], [3, 4]], [[1, 2], [3, 5]]) == (1, 1)
    assert first_divergence([[1, 2, 7]], [[1, 2]]) == (0, 2)  # one output ended
    assert first_divergence([[1]], [[1], [2]]) == (1, 0)  # a turn missing


def test_divergence_gap_weighs_the_two_choices(pair):
    """A replay that took the runner-up where plain decode took the argmax: the oracle's gap
    between the two is what the logprobs of that position say (log_softmax keeps logit
    differences), and a position with no token on one side has no gap."""
    from agentfast.spec_decode.replay import _assistant_turns, divergence_gap

    _, plain = pair
    trace = next(t for t in load_traces() if t["name"] == "plain_chat")
    i = _assistant_turns(trace)[0]
    p = SamplingParams(max_tokens=6, temperature=0.0)
    r = plain.generate(plain.encode_chat(trace["messages"][:i]), p, logprobs=2)
    want = [list(r.token_ids)]
    k = 3
    (best, lp0), (second, lp1) = r.logprobs[k].top[:2]
    assert best == want[0][k]
    got = [want[0][:k] + [second]]
    d = divergence_gap(plain, trace, got, want)
    assert (d["turn"], d["position"], d["drafted_token"], d["plain_token"]) == (0, k, second, best)
    assert d["gap"] == pytest.approx(lp0 - lp1, abs=1e-3) and d["below_max"] == 0.0
    assert divergence_gap(plain, trace, want, want) is None
    assert divergence_gap(plain, trace, [want[0][:k]], want)["gap"] is None


def test_warm_up_compiles_every_tool_grammar(pair):
    """replay's warm-up generates under each trace's tool grammar, so no timed turn pays for
    compiling one (the automata are memoized per tokenizer, shared by every engine of it)."""
    from agentfast.engine.constraints import _entry, tool_call
    from agentfast.spec_decode.replay import warm_up

    spec, _ = pair
    sets = [t["tools"] for t in load_traces() if t.get("tools")]
    assert len(sets) >= 2
    cached = _entry(spec.tokenizer)["automata"]
    cached.clear()
    warm_up(spec, tool_sets=sets)
    keys = {k[0] for k in cached}
    assert all(tool_call(s, mode="required") in keys for s in sets)
    assert (spec.drafter.steps, spec.drafter.drafted) == (0, 0)  # counts start afresh


def test_switch_t_refused_where_it_means_nothing(llama_dir, capsys):
    """--switch-t: 0 or 2..16, and only for a backend that switches per step (the
    monokernel's); --switch-narrow: 2 or more, fewer than --switch-t, the same backends;
    --switch-match: MIN,WIDE[,NEED], the same backends."""
    from agentfast.spec_decode.replay import main

    for bad in ("1", "17", "-2"):
        with pytest.raises(SystemExit) as e:
            main(["-m", str(llama_dir), "--switch-t", bad])
        assert e.value.code == 2
        assert "--switch-t" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["-m", str(llama_dir), "--switch-t", "4", "--trace", "plain_chat", "-n", "2"])
    assert e.value.code == 2 and "does not switch per step" in capsys.readouterr().err
    for bad in (["--switch-narrow", "1", "--switch-t", "8"], ["--switch-narrow", "4",
                                                             "--switch-t", "4"],
                ["--switch-narrow", "16"], ["--switch-narrow", "-2"]):
        with pytest.raises(SystemExit) as e:
            main(["-m", str(llama_dir), *bad])
        assert e.value.code == 2 and "--switch-narrow" in capsys.readouterr().err
    for bad in ("2", "2,x", "1,2,3,4", "-1,4"):
        with pytest.raises(SystemExit) as e:
            main(["-m", str(llama_dir), "--switch-match", bad])
        assert e.value.code == 2 and "--switch-match" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["-m", str(llama_dir), "--switch-match", "2,4", "--trace", "plain_chat", "-n", "2"])
    assert e.value.code == 2 and "does not switch per step" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["-m", str(llama_dir), "--switch-t", "8", "--switch-narrow", "2", "--trace",
              "plain_chat", "-n", "2"])
    assert e.value.code == 2 and "does not switch per step" in capsys.readouterr().err
