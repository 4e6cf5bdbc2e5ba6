"""DraftPolicy: k rises to k_max under high acceptance, drafting switches off when it does not
pay and comes back after a probe finds acceptance, the cost model picks k from a step cost
table; in the reference backend's speculative loop the greedy output stays that of plain
decode whatever the policy does; the rule for a backend that drafts on the device (break-even
per step, a launch's pause and probes)."""

from __future__ import annotations

import pytest

from agentfast.engine import SamplingParams
from agentfast.spec_decode import Drafter, DraftPolicy, NgramDrafter, StepCost
from agentfast.spec_decode.policy import FREE, expected_tokens, measure_step_costs

LINEAR = StepCost({1: 1.0, 9: 2.0})  # each extra position an eighth of a step


def test_step_cost_table():
    c = StepCost({1: 50.0, 3: 55.0, 5: 100.0})  # any unit: relative to T = 1
    assert c.ratio(1) == 1.0 and c(3) == pytest.approx(1.1)
    assert c(2) == pytest.approx(1.05) and c(4) == pytest.approx(1.55)
    assert c(7) == pytest.approx(2.9)  # beyond the table: along the last segment
    assert FREE(17) == 1.0
    with pytest.raises(ValueError):
        StepCost({2: 1.0})
    assert expected_tokens(0.5, 2) == pytest.approx(1.75) and expected_tokens(0.0, 5) == 1.0


def test_high_acceptance_raises_k_to_k_max():
    p = DraftPolicy(k_max=6, k=1, cost=LINEAR)
    seen = []
    for _ in range(10):
        k = p.next_k()
        seen.append(k)
        p.update(k, k)  # everything accepted
    assert seen[:6] == [1, 2, 3, 4, 5, 6] and seen[-1] == 6 and not p.off
    assert p.rate > 0.9


def test_rejections_shrink_k():
    p = DraftPolicy(k_max=8, k=8, cost=FREE, rate=0.9)
    p.update(8, 2)
    assert p.k == 3 and p.next_k() == 3  # what was accepted, plus one
    p.update(3, 0)
    assert p.next_k() == 1


def test_cost_model_picks_k():
    cpu = StepCost({1: 1.0, 2: 1.02, 3: 1.05, 4: 1.53, 5: 1.57, 6: 1.6, 7: 1.95, 8: 1.95,
                    9: 2.0})
    p = DraftPolicy(k_max=8, k=8, cost=cpu, rate=0.7)
    assert p.next_k() == 2  # 3 positions cost about one; 4 half as much again
    p.rate = 0.98
    assert p.next_k() == 8
    p.rate, p.draft_cost = 0.3, 0.5  # a drafter that costs half a step per token
    assert p.best_k(8)[1] < 1.0  # does not pay at any k


def test_zero_acceptance_switches_off_then_a_probe_brings_it_back():
    p = DraftPolicy(k_max=4, k=4, cost=LINEAR, probe_every=5, max_probe_every=20, k_probe=2)
    for _ in range(30):
        p.update(p.next_k(), 0)
        if p.off:
            break
    assert p.off and p.switched_off == 1
    # Off: plain steps, then a probe.
    ks = [p.next_k() for _ in range(6)]
    assert ks == [0] * 5 + [2]
    p.update(2, 0)  # the probe finds nothing: wait twice as long
    assert p.off and [p.next_k() for _ in range(11)] == [0] * 10 + [2]
    p.update(2, 2)  # the probe is fully accepted: drafting is back
    assert not p.off and p.next_k() >= 2
    for _ in range(10):
        k = p.next_k()
        p.update(k, k)
    assert p.next_k() == 4 and p.probe_every == 5


def test_a_probe_without_proposals_stays_pending():
    p = DraftPolicy(k_max=4, cost=LINEAR, probe_every=2, k_probe=3)
    p.rate = 0.0
    p.update(1, 0)
    assert p.off
    assert [p.next_k() for _ in range(3)] == [0, 0, 3]
    p.update(0, 0)  # the drafter had nothing: the probe is still due
    assert p.next_k() == 3


def test_fixed_policy():
    p = DraftPolicy(k=3, k_max=3, adaptive=False, cost=LINEAR, draft_cost=5.0)
    for _ in range(5):
        p.update(3, 0)
    assert p.next_k() == 3 and not p.off


def test_for_backend_takes_costs(tiny):
    be = tiny.backend
    assert be.step_costs and be.step_costs[1] == 1.0
    p = DraftPolicy.for_backend(be, NgramDrafter())
    assert p.cost(2) == pytest.approx(be.step_costs[2] / be.step_costs[1])
    assert p.draft_cost == 0.0


def test_measure_step_costs(tiny):
    t = measure_step_costs(tiny.backend, Ts=(1, 2, 5), context=16, reps=2)
    assert set(t) == {1, 2, 5} and all(v > 0 for v in t.values())
    assert StepCost(t)(5) > 0


# ---- in the backend's speculative loop ------------------------------------------------------

class ScriptedDrafter(Drafter):
    """Drafts from a known output: wrong tokens while the sequence is shorter than
    `right_from`, the true continuation after (an oracle that becomes right midway)."""

    def __init__(self, prompt_len: int, output: list[int], right_from: int, vocab: int):
        super().__init__()
        self.p, self.out, self.right_from, self.vocab = prompt_len, output, right_from, vocab

    def propose(self, history: list[int], k: int) -> list[int]:
        j = len(history) - self.p  # output tokens so far
        true = self.out[j:j + k]
        if j < self.right_from:
            return [(t + 1) % self.vocab for t in true]
        return true


def _decode(eng, ids, max_new, drafter=None):
    be = eng.backend
    cache = be.new_cache()
    logits = be.prefill(cache, ids, 0)
    kw = {} if drafter is None else {"drafter": drafter, "history": ids}
    return list(be.decode(cache, logits, len(ids), SamplingParams(temperature=0.0), frozenset(),
                          max_new, **kw))


def test_backend_switches_off_and_back_on(tiny):
    ids = tiny.tokenizer.encode("Agents call tools, read files, and write them back")
    plain = _decode(tiny, ids, 80)
    d = ScriptedDrafter(len(ids), plain, 30, tiny.config.vocab_size)
    d.policy = DraftPolicy(k_max=4, k=4, cost=LINEAR, probe_every=4)
    ks = []
    orig = d.policy.next_k

    def spy():
        k = orig()
        ks.append(k)
        return k

    d.policy.next_k = spy
    assert _decode(tiny, ids, 80, d) == plain  # lossless whatever the policy does
    assert d.policy.switched_off >= 1 and 0 in ks  # off while the drafts were wrong
    assert ks[-1] == 4 and not d.policy.off  # back on, at k_max, once they were right
    assert d.accepted > 20


@pytest.mark.parametrize("text", ["0123456789 0123456789 0123456789 0123",
                                  "The quick brown fox jumps over the lazy dog."])
@pytest.mark.parametrize("policy", [dict(k_max=8, k=8), dict(k_max=2, k=1, min_gain=1.3),
                                    dict(k_max=3, k=3, adaptive=False)])
def test_greedy_unchanged_with_policy(tiny, text, policy):
    ids = tiny.tokenizer.encode(text)
    d = NgramDrafter()
    d.policy = DraftPolicy(cost=LINEAR, **policy)
    assert _decode(tiny, ids, 50, d) == _decode(tiny, ids, 50)


def test_break_even_and_launch_ended():
    """DraftPolicy's device rule: break-even accepted tokens per T step from the cost table;
    a pause switches drafting off (counted), a probe that pauses after one step doubles the
    wait, one that runs on switches drafting back on."""
    pol = DraftPolicy(k_max=3, k=3, cost=StepCost({1: 1.0, 4: 2.5}), draft_cost=0.1,
                      probe_every=4, max_probe_every=16)
    assert pol.break_even(4) == pytest.approx(2.5 + 0.3 - 1.0)
    assert DraftPolicy().break_even(9) == 0.0  # flat costs: always pays
    pol.launch_ended(paused=True, probe=False, steps=5)
    assert pol.off and pol.switched_off == 1
    assert [pol.next_k() for _ in range(4)] == [0, 0, 0, 0] and pol.next_k() == pol.k_probe
    assert pol.probing
    pol.launch_ended(paused=True, probe=True, steps=1)
    assert pol.off and not pol.probing and pol.probe_every == 8 and pol.switched_off == 1
    assert pol.next_k() == 0 and pol.take_plain() == 7 and pol.next_k() == pol.k_probe
    pol.launch_ended(paused=False, probe=True, steps=9)
    assert not pol.off and pol.probe_every == 4 and pol.next_k() > 0


def test_measure_step_costs_refuses_in_kernel_verification():
    """The monokernel scores drafts in its own T-position kernels: timing its `logits` (the
    shared prefill forward) would give a flat table (seen on an H200), so it is an error."""
    from types import SimpleNamespace

    from agentfast.engine.errors import RequestError

    be = SimpleNamespace(name="monokernel", verifies_in_kernel=True)
    with pytest.raises(RequestError, match="T-position kernels"):
        measure_step_costs(be)


def test_fixed_step_T_prices_every_step_at_that_kernel():
    """A backend whose every verification step is one kernel of step_T positions (the
    monokernel with a host drafter): one draft costs what eight do, so a drafter whose
    acceptance pays at T = 2 does not pay there."""
    p = DraftPolicy(k_max=8, k=1, cost=StepCost({1: 1.0, 2: 1.1, 9: 2.2}), rate=0.5)
    assert p.step_cost(1) == pytest.approx(1.1) and p.gain(1) > 1.0
    p.step_T = 9
    assert p.step_cost(1) == pytest.approx(2.2) and p.step_cost(8) == pytest.approx(2.2)
    assert p.best_k(8)[1] < 1.0
    p.update(1, 0)  # a reject: nothing pays at T = 9 now
    assert p.off and p.next_k() == 0


def test_timed_policy_uses_measured_seconds():
    """`timed`: once a plain step, a verification step and drafting are measured, the step
    cost is theirs (running means), not the table's; until then the table's."""
    p = DraftPolicy(k_max=4, k=4, cost=LINEAR, draft_cost=0.1, rate=0.9, timed=True, step_T=5)
    table = LINEAR(5) + 2 * 0.1
    assert p.step_cost(2) == pytest.approx(table)
    p.observe_time("plain", 8e-3, n=8)  # 1 ms per plain step
    p.observe_time("verify", 3e-3, T=5)
    assert p.step_cost(2) == pytest.approx(table)  # drafting not measured yet
    p.observe_time("draft", 1e-3, n=2)  # 0.5 ms per drafted token
    assert p.step_cost(2) == pytest.approx((3e-3 + 2 * 0.5e-3) / 1e-3)
    p.observe_time("verify", 8e-3, T=5)  # running mean, weight 0.2
    assert p.verify_s[5] == pytest.approx(3e-3 + 0.2 * 5e-3)
    p.observe_time("plain", 0.0, n=3)  # nothing measured: ignored
    p.observe_time("draft", 1e-3, n=0)
    assert p.plain_s == pytest.approx(1e-3) and p.draft_s == pytest.approx(0.5e-3)
    assert p.gain(4) == pytest.approx(expected_tokens(0.9, 4) / ((4e-3 + 4 * 0.5e-3) / 1e-3))
    p.timed = False
    assert p.step_cost(2) == pytest.approx(table)


def test_timed_policy_switches_a_slow_drafter_off():
    """A host drafter whose measured steps cost more than the tokens they bring (MTP on the
    GPU: a launch per step and the module's forward) is switched off, though the table alone
    says it pays."""
    p = DraftPolicy(k_max=1, k=1, cost=StepCost({1: 1.0, 2: 1.1}), draft_cost=0.2, rate=0.55,
                    timed=True, step_T=2)
    assert p.gain(1) > 1.0
    p.observe_time("plain", 4e-3, n=8)  # 0.5 ms per plain step
    for _ in range(3):
        k = p.next_k()
        if k:
            p.observe_time("draft", 0.3e-3, n=k)
            p.observe_time("verify", 0.9e-3, T=2)
            p.update(k, 1)  # even full acceptance: 2 tokens for 2.4 steps
    assert p.off and p.gain(1, rate=1.0) < 1.0


def test_hopeless_drafter_probes_rarely():
    """Measured costs under which no k pays even at full acceptance (a slow host drafter):
    switched off, the next probe is hopeless_wait plain steps away, not probe_every."""
    p = DraftPolicy(k_max=4, k=2, cost=StepCost({1: 1.0, 5: 1.2}), draft_cost=0.1, rate=0.9,
                    timed=True, step_T=5, probe_every=8, hopeless_wait=1000)
    assert not p.measured() and not p.hopeless()
    p.observe_time("plain", 0.6e-3)
    p.observe_time("verify", 1.6e-3, T=5)
    p.observe_time("draft", 1.7e-3)  # ~0.36x at best
    assert p.measured() and p.hopeless()
    p.update(p.next_k(), 0)
    assert p.off
    waits = 0
    while p.next_k() == 0:
        waits += 1
    assert waits == 1000 and p.probing
    # a drafter that would pay at full acceptance keeps the short wait
    q = DraftPolicy(k_max=4, k=2, cost=StepCost({1: 1.0, 5: 1.2}), rate=0.9, timed=True,
                    step_T=5, probe_every=8, hopeless_wait=1000)
    q.observe_time("plain", 1e-3)
    q.observe_time("verify", 1.5e-3, T=5)  # drafting free: 5 tokens for 1.5 steps at best
    assert q.measured() and not q.hopeless()
    q.rate = 0.0
    q.update(q.next_k(), 0)
    assert q.off
    waits = 0
    while q.next_k() == 0:
        waits += 1
    assert waits == 8


def test_take_plain_carries_the_wait_over_to_the_next_sequence():
    """Switched off with a long wait, a sequence of 30 tokens takes only its own plain steps:
    the rest of the wait holds for the next sequences (no probe at every sequence start)."""
    p = DraftPolicy(k_max=2, k=1, cost=StepCost({1: 1.0, 3: 3.0}), rate=0.2, probe_every=100)
    p.update(p.next_k(), 0)
    assert p.off
    for _ in range(3):  # three sequences of 30 tokens: 1 (next_k) + 29 (take_plain) each
        assert p.next_k() == 0 and p.take_plain(29) == 29
    assert p.next_k() == 0 and p.take_plain(50) == 9  # 100 - 3 x 30 - 1
    assert p.next_k() == p.k_probe and p.probing
