"""The device n-gram drafter through the monokernel backend (CPU interpreter, one program):
greedy output equal to the reference backend's plain decode token for token, whole stretches in
one launch of the T = k + 1 kernel, with a constraint (forced tokens drafted), stop ids, the KV
capacity, sampling equal to plain sampling, the adaptive pause and probes, cancellation, the
host path kept for on_device=False, and the draft counts in GenerationResult and the replay."""

from __future__ import annotations

import json

import pytest
import torch
from mk_utils import interpreted, spy_launches

from agentfast.engine import Engine, SamplingParams
from agentfast.engine import constraints as C
from agentfast.kernels.monokernel import weights as W
from agentfast.spec_decode import DraftPolicy, NgramDrafter, StepCost

REPETITIVE = "a b c d a b c d a b c d a b c"


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    from tiny_models import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("mkd") / "qwen3", "qwen3", seed=3,
                           tie_word_embeddings=True, num_hidden_layers=1)


@pytest.fixture(scope="module")
def folder(llama_dir):
    """The tiny Llama (conftest): its greedy output varies (the one-layer Qwen3 above repeats
    one token, which the padding alone predicts)."""
    return llama_dir


@pytest.fixture(scope="module")
def ref(folder):
    return Engine.load(str(folder), backend="reference", device="cpu", dtype=torch.float32,
                       max_context=96)


def _mk(folder, drafter, max_context: int = 96) -> Engine:
    return Engine.load(str(folder), backend="monokernel", device="cpu", dtype=torch.float32,
                       max_context=max_context, drafter=drafter)


def _fixed(k: int = 3, **kw) -> NgramDrafter:
    d = NgramDrafter(**kw)
    d.policy = DraftPolicy(k_max=k, k=k, adaptive=False)  # always k drafts
    return d


@pytest.fixture
def launches(monkeypatch):
    return spy_launches(monkeypatch)


@interpreted
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_device_ngram_one_launch_equals_reference(folder, qwen3_dir, launches, arch):
    """Greedy: the reference's tokens; the whole output in one launch of the T = 4 kernel,
    fewer steps than tokens; the drafts the device counted reach GenerationResult; a session's
    second turn too (its history is the whole conversation)."""
    path = folder if arch == "llama" else qwen3_dir
    ref = Engine.load(str(path), backend="reference", device="cpu", dtype=torch.float32,
                      max_context=96)
    d = _fixed()
    mk = _mk(path, d)
    assert mk.backend.drafts_on_device(d)
    p = SamplingParams(max_tokens=16, ignore_eos=True)
    for text in (REPETITIVE, "Agents call tools, read files, and write them back. Agents call"):
        ids = mk.tokenizer.encode(text)
        launches.clear()
        got = mk.generate(ids, p)
        assert got.token_ids == ref.generate(ids, p).token_ids and got.finish_reason == "length"
        assert [(T, n) for T, n, _ in launches] == [(4, 15)], launches
        if text == REPETITIVE:
            assert launches[0][2] < 15  # steps: drafts (or the padding) were accepted
        assert 0 <= got.accepted_draft_tokens <= got.draft_tokens
        assert got.draft_steps <= launches[0][2]
        assert d.steps >= got.draft_steps and got.draft_tokens <= 3 * got.draft_steps
    assert d.accepted > 0  # over both prompts
    ids = mk.tokenizer.encode(REPETITIVE)
    first = mk.generate(ids, p, session="s")
    turn2 = ids + first.token_ids[:5] + ids[:3]
    assert mk.generate(turn2, p, session="s").token_ids == ref.generate(turn2, p).token_ids


def _json_name(mk, ref, launches):
    """(prompt ids, result) of a repetitive prompt under a JSON-shaped regex, its tokens and
    finish reason the reference's; the launches recorded afresh."""
    ids = mk.tokenizer.encode(REPETITIVE)
    c = SamplingParams(max_tokens=40, constraint=C.regex(r'\{"name": "(ab|cd)+", "ok": 1\}'))
    launches.clear()
    got = mk.generate(ids, c)
    want = ref.generate(ids, c)
    assert got.token_ids == want.token_ids and got.finish_reason == want.finish_reason
    return ids, got


@interpreted
def test_device_ngram_constrained_and_stops(folder, ref, launches):
    """With a constraint: the reference's tokens, forced tokens drafted (a literal key costs
    no steps); stop ids end the output where the reference's does."""
    mk = _mk(folder, _fixed())
    ids, got = _json_name(mk, ref, launches)
    assert len(launches) == 1 and launches[0][2] < len(got.token_ids) // 2, launches
    c2 = SamplingParams(max_tokens=12, constraint=C.regex(r"(ab|cd)+"))
    assert mk.generate(ids, c2).token_ids == ref.generate(ids, c2).token_ids
    p = SamplingParams(max_tokens=16, ignore_eos=True)
    plain = ref.generate(ids, p).token_ids
    stop = plain[len(plain) // 2]
    s = SamplingParams(max_tokens=16, stop_token_ids=(stop,), ignore_eos=True)
    r = mk.generate(ids, s)
    assert r.token_ids == plain[:plain.index(stop)] and r.finish_reason == "stop"


@interpreted
def test_device_ngram_constrained_three_widths(folder, ref, launches):
    """The backend's default switching (one position, 2-position narrow steps, 16) under a
    constraint: the automaton walks whichever width a step has (forced tokens drafted); the
    reference's tokens, one launch of the T = 16 kernel, fewer steps than tokens (12 for
    these 20: the forced runs here are 1-3 tokens, below switch_match_wide, so narrow; a
    forced draft is never a weak match: the lookup's weak guesses alone run one position)."""
    d = NgramDrafter()
    _, got = _json_name(_mk(folder, d), ref, launches)
    assert [T for T, _, _ in launches] == [16], launches
    assert launches[0][2] < len(got.token_ids), launches
    assert sum(d.widths.values()) == launches[0][2] and d.widths.get(2, 0) > 0, d.widths


@interpreted
def test_device_ngram_at_the_kv_capacity(folder, launches):
    """Fewer than T positions left: the T kernel ends and the T = 1 kernel decodes the rest,
    so the output is as long as plain decode's (text the lookup does not predict: one token
    per step, so the T kernel does reach the capacity before the last token)."""
    small = dict(device="cpu", dtype=torch.float32, max_context=32)
    r = Engine.load(str(folder), backend="reference", **small)
    mk = Engine.load(str(folder), backend="monokernel", drafter=_fixed(7), **small)
    ids = mk.tokenizer.encode("The quick brown fox")
    p = SamplingParams(max_tokens=64, ignore_eos=True)
    want = r.generate(ids, p)
    launches.clear()
    got = mk.generate(ids, p)
    assert got.token_ids == want.token_ids and len(got.token_ids) == 32 - len(ids)
    assert [T for T, _, _ in launches] == [8, 1], launches


@interpreted
def test_device_ngram_sampling_equals_plain_sampling(folder):
    """Sampling keys its noise by position: drafting on the device samples the very tokens
    plain decode samples with the same seed (under a constraint that keeps the output
    repetitive, drafts get accepted too)."""
    mk = _mk(folder, _fixed())
    plain = _mk(folder, None)
    ids = mk.tokenizer.encode(REPETITIVE)
    for c in (None, C.regex(r"(ab|cd)+")):
        p = SamplingParams(max_tokens=12, temperature=1.0, seed=4, ignore_eos=c is None,
                           constraint=c)
        a = mk.generate(ids, p)
        assert a.token_ids == plain.generate(ids, p).token_ids and len(a.token_ids) > 6
        assert c is None or a.accepted_draft_tokens > 0


@interpreted
def test_device_ngram_pauses_and_probes(folder, ref, launches):
    """An adaptive policy where a step of 4 positions costs 2 plain ones: on text the lookup
    does not predict, the device pauses the launch, the T = 1 kernel runs the plain stretch
    and a probe launch tries again (backing off); the output stays the reference's."""
    d = NgramDrafter()
    d.policy = DraftPolicy(k_max=3, k=3, probe_every=2, cost=StepCost({1: 1.0, 4: 2.0}))
    assert d.policy.break_even(4) == pytest.approx(1.0)
    mk = _mk(folder, d)
    mk.backend.switch_t = 0  # the pausing kernel (not per-step switching)
    ids = mk.tokenizer.encode("The quick brown fox jumps over the lazy dog. 0123")
    p = SamplingParams(max_tokens=24, ignore_eos=True)
    got = mk.generate(ids, p)
    assert got.token_ids == ref.generate(ids, p).token_ids
    Ts = [T for T, _, _ in launches]
    assert d.policy.switched_off >= 1 and 1 in Ts and Ts[0] == 4, launches
    assert Ts.count(4) >= 2  # probed again
    assert d.policy.step_accepted is not None


def _one_launch_each(mk, ref, launches, T: int) -> list[tuple[int, int]]:
    """24 tokens of a text the lookup has little for and of a repetitive one: the reference's
    tokens, each in one launch of the T kernel; (drafting steps, steps) per text."""
    p = SamplingParams(max_tokens=24, ignore_eos=True)
    out = []
    for text in ("The quick brown fox jumps over the lazy dog. 0123", REPETITIVE):
        ids = mk.tokenizer.encode(text)
        launches.clear()
        got = mk.generate(ids, p)
        assert got.token_ids == ref.generate(ids, p).token_ids
        assert [(t, n) for t, n, _ in launches] == [(T, 23)], launches
        out.append((got.draft_steps, launches[0][2]))
    return out


@interpreted
def test_device_ngram_switches_per_step(folder, ref, launches):
    """The adaptive policy on the device, the backend's defaults (switch_t 16 with 2-position
    narrow steps; the policy made for the backend drafts up to 15 per step): one launch of the
    T = 16 kernel for the whole output, where the lookup predicts nothing for a while too
    (those steps run as one position: fewer drafting steps than steps); the reference's
    tokens."""
    d = NgramDrafter()
    mk = _mk(folder, d)
    assert (mk.backend.switch_t, mk.backend.switch_narrow) == (16, 2)
    fox, rep = _one_launch_each(mk, ref, launches, 16)
    assert fox[0] < fox[1]  # steps the lookup had nothing for: one position each
    assert rep[1] < 23  # drafts kept: fewer steps than tokens
    assert d.policy.switched_off == 0 and d.policy.step_accepted is not None


@interpreted
def test_device_ngram_narrow_then_wide(folder, ref, launches):
    """MonokernelBackend.switch_narrow: one launch of the T = 8 kernel built with 2-position
    steps (Tiling.narrow) for the whole output, the drafter's steps narrow or wide by the
    kernel's rule; the reference's tokens; the floor is the narrow step's break-even."""
    d = NgramDrafter()
    d.policy = DraftPolicy(k_max=8, k=4, cost=StepCost({1: 1.0, 2: 1.2, 8: 2.0}))
    mk = _mk(folder, d)
    mk.backend.switch_t, mk.backend.switch_narrow = 8, 2
    runs = _one_launch_each(mk, ref, launches, 8)
    kern = mk.backend._spec_kernels[(8, 2, False)]
    assert kern.plan.tiling.narrow == 2 and kern.consts["TB"] == 2
    b = next(iter(mk.backend._bufs.values()))
    # widths by the lookup's match (switch_match_min / _wide), not by the kept drafts
    assert int(b.state[W.D_WIDE]) == 1 and int(b.state[W.D_NEED]) == 8
    assert (int(b.state[W.D_MATCH_MIN]), int(b.state[W.D_MATCH_WIDE])) == (2, 4)
    assert int(b.state[W.D_FLOOR]) == W.q16(0.5 * d.policy.break_even(2))
    # the drafter got the kernel's steps by width: every step of the two launches
    assert set(d.widths) <= {1, 2, 8} and sum(d.widths.values()) == sum(
        n for _, n in runs), (d.widths, runs)


@interpreted
def test_device_ngram_switching_samples_as_plain(folder, launches):
    """Per-step switching under sampling (temperature, and top-p: the LM head's per-tile sums,
    written by one-position steps in the T kernel's layout): the tokens plain sampling gives
    with the same seed, in one launch of the T = 4 kernel."""
    d = NgramDrafter()
    d.policy = DraftPolicy(k_max=3, k=3, cost=StepCost({1: 1.0, 4: 2.0}))
    mk = _mk(folder, d)
    plain = _mk(folder, None)
    ids = mk.tokenizer.encode(REPETITIVE)
    for kw in (dict(temperature=1.0), dict(temperature=0.8, top_k=8, top_p=0.9)):
        p = SamplingParams(max_tokens=12, seed=5, ignore_eos=True, **kw)
        want = plain.generate(ids, p).token_ids
        launches.clear()
        a = mk.generate(ids, p)
        assert a.token_ids == want and len(want) == 12
        assert [T for T, _, _ in launches] == [4], launches


@interpreted
def test_device_ngram_cancel_keeps_counts(folder):
    d = _fixed()
    mk = _mk(folder, d)
    ids = mk.tokenizer.encode(REPETITIVE)
    g = mk.stream(ids, SamplingParams(max_tokens=16, ignore_eos=True))
    it = iter(g)
    next(it)  # the prefill's token
    next(it)  # the kernel's first (the interpreter ran the launch to its end)
    g.close()
    assert g.result is not None and g.result.finish_reason == "cancelled"
    assert g.result.draft_steps == d.steps and d.steps > 0  # one launch ran the whole stretch


@interpreted
def test_host_ngram_path_kept(folder, ref, launches):
    """on_device=False: the host drafts, one verification step per launch (same output)."""
    d = _fixed(on_device=False)
    mk = _mk(folder, d)
    assert not mk.backend.drafts_on_device(d)
    ids = mk.tokenizer.encode(REPETITIVE)
    p = SamplingParams(max_tokens=16, ignore_eos=True)
    got = mk.generate(ids, p)
    assert got.token_ids == ref.generate(ids, p).token_ids and got.draft_steps > 0
    assert all(n == 1 for T, n, _ in launches if T == 4) and len(launches) > 2


@interpreted
def test_replay_reports_device_drafts(folder, tmp_path):
    """spec_decode.replay --backend monokernel --drafter ngram: equal to plain decode, and the
    records carry the device drafter's counts."""
    from agentfast.spec_decode.replay import main

    out = tmp_path / "r.json"
    rc = main(["-m", str(folder), "--backend", "monokernel", "--trace", "repeat_tool_output",
               "-n", "10", "-k", "3", "--check", "--json", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())[-1]
    assert rec["backend"] == "monokernel" and rec["drafter"] == "ngram"
    assert rec["steps"] > 0 and 0 < rec["drafted"] <= 3 * rec["steps"]
    assert rec["mean_accepted"] == pytest.approx(rec["accepted"] / rec["steps"], abs=1e-4)
    proj = rec["projected"]  # at the Qwen3-1.7B shape's step costs, the T = k + 1 kernel
    assert proj["shape"] == "qwen3-1.7b" and proj["T"] == 4 and proj["speedup"] > 0


@interpreted
def test_device_ngram_searches_the_escaped_view(folder, ref, launches, monkeypatch):
    """With a tokenizer the n-gram drafter's view (the prompt JSON-escaped) goes to the device
    history before the sequence, as the host's lookup searches it; the output stays the
    reference's."""
    from agentfast.kernels.monokernel import weights as W

    seen = []
    start = W.start_drafting

    def spy(bufs, history, **kw):
        seen.append(list(history))
        return start(bufs, history, **kw)

    monkeypatch.setattr(W, "start_drafting", spy)
    mk = _mk(folder, None)
    d = _fixed(tokenizer=mk.tokenizer)
    mk = _mk(folder, d)
    ids = mk.tokenizer.encode('x = "a"\ny = "b"\n' * 3)
    p = SamplingParams(max_tokens=12, ignore_eos=True)
    got = mk.generate(ids, p)
    assert got.token_ids == ref.generate(ids, p).token_ids
    assert d.view and seen
    lead, rest = seen[0][:-len(ids) - 1], seen[0][-len(ids) - 1:]
    assert rest[:-1] == ids and rest[-1] == got.token_ids[0]  # the sequence's history last
    # before it as much of the view as the buffer holds beside the sequence (its end)
    assert lead and lead == d.view[len(d.view) - len(lead):]
    assert len(lead) <= 96 - len(rest) - 12 - 4 and len(lead) < len(d.view)  # capacity 96
