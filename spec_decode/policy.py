"""How many tokens to draft next, and whether drafting pays at all (host side, no tensors).

A verification step of T = 1 + k positions costs `StepCost.ratio(T)` plain 1-position steps
(a table per backend, `backend.step_costs`: measured on CPU for the reference backend; the GPU
backends give their measured T-step costs); drafting k tokens costs k * `draft_cost` more (a
drafter that runs a model: MTP, a draft model; zero for n-gram lookup). With a per-position
acceptance rate a (drafts are kept as a prefix: the i-th survives with probability a^i), a step
of k drafts yields on average

    tokens(k) = 1 + a + a^2 + ... + a^k      (the accepted drafts, plus the step's own token)

so drafting k gains  gain(k) = tokens(k) / (ratio(1 + k) + k * draft_cost)  over plain decode
(ratio(step_T) where every verification step runs one kernel of step_T positions, whatever k:
the monokernel's host-drafter path). A backend that runs host drafters on the GPU also times
its steps (`timed`): the seconds of a plain step, of a verification step and of drafting one
token, each a running mean, replace the tables once measured, since there a step costs what
the tables do not see (a host drafter's own forward and its launches, a launch and a sync
per verification step: with the tables alone, the MTP drafter ran at 0.35-0.48x plain decode
on an H200 and never switched off, bench/results/spec-decode-gpu-20261129-s7).
`DraftPolicy` keeps a running estimate of a, moves k up after a full accept and down after a
reject, drafts the k (up to that length) with the best gain, and switches drafting off when no
k gains; switched off, it probes again after a while (a repetitive stretch later on gets
drafting back), backing off further after each probe that finds nothing.

A backend that drafts on the device (the monokernel with the n-gram drafter) runs many steps of
one T-position kernel per launch: each costs cost(T) whatever it drafts, so it drafts T - 1 and
applies the same rule per step to what it measures, a running mean of the tokens a step keeps
past its first, pausing below `break_even(T)`; `launch_ended` carries the switch-off, probes and
back-off over to the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class StepCost:
    """Cost of a T-position step relative to a 1-position step, from a table {T: cost} in any
    unit (seconds, or already relative): linear between the T it gives, and beyond the last
    one along the last segment. A table with only T = 1 is flat (every T costs one step)."""

    def __init__(self, table: Mapping[int, float]):
        if 1 not in table or table[1] <= 0:
            raise ValueError(f"a step cost table needs a positive cost at T = 1: {dict(table)}")
        base = float(table[1])
        self.points = sorted((int(t), float(c) / base) for t, c in table.items())

    def ratio(self, T: int) -> float:
        pts = self.points
        if T <= 1 or len(pts) == 1:
            return 1.0
        for (t0, c0), (t1, c1) in zip(pts, pts[1:], strict=False):
            if t1 >= T:
                return c0 + (c1 - c0) * (T - t0) / (t1 - t0)
        (t0, c0), (t1, c1) = pts[-2], pts[-1]
        return c1 + (c1 - c0) * (T - t1) / (t1 - t0)

    __call__ = ratio


FREE = StepCost({1: 1.0})  # every T costs one step: drafting never loses (acceptance studies)


def expected_tokens(a: float, k: int) -> float:
    """Tokens one step yields with k drafts at per-position acceptance a: 1 + a + ... + a^k."""
    return sum(a ** i for i in range(k + 1))


class DraftPolicy:
    """Adaptive draft length with a cost-model switch-off (see the module docstring).

    - `rate`: the per-position acceptance estimate, an exponential moving average over drafted
      positions that were tested (each accepted draft is a success; the first rejected one a
      failure; drafts after it were never tested), weight `ewma` per position.
    - `k`: the length ceiling from recent steps: +1 after a step that kept all its drafts, the
      accepted count + 1 after a reject; within [1, k_max]. `next_k()` drafts the k' <= k with
      the best gain, or 0 (plain decode) while switched off.
    - Off when the best gain is below `min_gain`; after `probe_every` plain steps a probe step
      drafts `k_probe` tokens, and its own acceptance replaces the estimate (the old one is
      stale). A probe that does not pay doubles the wait (up to `max_probe_every`); one that
      does resets it. A step where the drafter had nothing to propose counts for nothing.
    - Timed with one verification kernel (`measured()`): where no k would pay even with every
      draft accepted (`hopeless()`), the wait is `hopeless_wait` plain steps instead.
    """

    def __init__(self, k_max: int = 8, k: int = 4, cost: StepCost | Callable[[int], float]
                 = FREE, draft_cost: float = 0.0, rate: float = 0.6, ewma: float = 0.15,
                 min_gain: float = 1.0, probe_every: int = 8, max_probe_every: int = 64,
                 k_probe: int = 3, adaptive: bool = True, step_T: int | None = None,
                 timed: bool = False, hopeless_wait: int = 4096):
        assert k_max >= 1 and 1 <= k <= k_max, f"bad draft lengths k={k}, k_max={k_max}"
        self.k_max, self.k, self.cost, self.draft_cost = k_max, k, cost, draft_cost
        self.rate, self.ewma, self.min_gain = rate, ewma, min_gain
        self.probe_every = self._wait0 = probe_every
        self.max_probe_every, self.k_probe = max_probe_every, min(k_probe, k_max)
        self.adaptive = adaptive  # False: always k drafts (no adaptation, no switch-off)
        self.off = False
        self._wait = 0  # plain steps left before the next probe (while off)
        self._probing = False
        self.switched_off = 0  # times drafting was switched off (for reports)
        # accepted tokens per step of a backend that drafts on the device (the monokernel's
        # running mean, kept across sequences; None: not measured yet)
        self.step_accepted: float | None = None
        # every verification step runs a kernel of this many positions (None: 1 + k)
        self.step_T = step_T
        # measured seconds (running means, kept across sequences; None: not measured yet) of a
        # plain step, of drafting one token, and of a verification step by T (without drafting)
        self.timed = timed
        # plain steps between probes once the measured costs say that no k pays even if every
        # draft were accepted (a probe there only costs: an MTP probe on an H200 took ~11 plain
        # steps, bench/results/spec-decode-gpu-20261129-s8)
        self.hopeless_wait = hopeless_wait
        self.plain_s: float | None = None
        self.draft_s: float | None = None
        self.verify_s: dict[int, float] = {}

    @classmethod
    def for_backend(cls, backend, drafter, **kw) -> DraftPolicy:
        """The policy for `drafter` on `backend`: the backend's step cost table
        (`backend.step_costs`, {T: cost}; flat where it has none), its ceiling of drafts per
        step for this drafter where it has one (`backend.draft_k_max`), the drafter's cost per
        drafted token (`drafter.draft_cost`, in plain steps); timed where the backend times its
        steps (`backend.times_drafting`)."""
        table = getattr(backend, "step_costs", None)
        kw.setdefault("cost", StepCost(table) if table else FREE)
        k_max = getattr(backend, "draft_k_max", lambda d: None)(drafter)
        if k_max is not None and "k_max" not in kw:  # (the backend's kernel for this drafter)
            kw["k_max"] = k_max
        kw.setdefault("draft_cost", float(getattr(drafter, "draft_cost", 0.0)))
        kw.setdefault("timed", bool(getattr(backend, "times_drafting", False)))
        return cls(**kw)

    def gain(self, k: int, rate: float | None = None) -> float:
        """Expected speedup over plain decode of drafting k tokens per step."""
        a = self.rate if rate is None else rate
        return expected_tokens(a, k) / self.step_cost(k)

    def step_cost(self, k: int) -> float:
        """A step with k drafts, in plain steps: measured where `timed` has the plain step's,
        the verification step's (of its T) and the drafting's seconds, else from the tables."""
        T = self.step_T or 1 + k
        v = self._verify_s(T)
        if v is not None:
            return (v + k * (self.draft_s or 0.0)) / self.plain_s
        return self.cost(T) + k * self.draft_cost

    def _verify_s(self, T: int) -> float | None:
        """The measured seconds of a T-position verification step where every cost of such a
        step is measured (plain step, drafting unless free), else None."""
        if not (self.timed and self.plain_s) or (self.draft_s is None and self.draft_cost):
            return None
        return self.verify_s.get(T)

    def measured(self) -> bool:
        """`timed` with one verification kernel (step_T), and every cost of its steps
        measured (step_cost uses them for every k)."""
        return bool(self.step_T) and self._verify_s(self.step_T) is not None

    def hopeless(self) -> bool:
        """Measured costs under which no draft length pays even at full acceptance."""
        return self.measured() and max(self.gain(k, 1.0) for k in range(1, self.k_max + 1)) \
            < self.min_gain

    def _off_wait(self) -> int:
        return self.hopeless_wait if self.hopeless() else self.probe_every

    def observe_time(self, kind: str, seconds: float, n: int = 1, T: int | None = None,
                     weight: float = 0.2) -> None:
        """A measured span (`timed` policies): kind "plain" (n plain steps), "draft" (n drafted
        tokens) or "verify" (one verification step of T positions, without the drafting);
        folded into the running mean (the first measurement sets it)."""
        if n <= 0 or seconds <= 0:
            return
        x = seconds / n
        if kind == "verify":
            old = self.verify_s.get(T)
            self.verify_s[T] = x if old is None else old + weight * (x - old)
            return
        attr = {"plain": "plain_s", "draft": "draft_s"}[kind]
        old = getattr(self, attr)
        setattr(self, attr, x if old is None else old + weight * (x - old))

    def best_k(self, limit: int | None = None) -> tuple[int, float]:
        """(k, gain) with the best gain over 1..limit (default: the current ceiling)."""
        lim = self.k if limit is None else limit
        return max(((j, self.gain(j)) for j in range(1, lim + 1)), key=lambda x: (x[1], -x[0]))

    @property
    def probing(self) -> bool:
        """next_k() asked for a probe step (drafting is off; this step tests it again)."""
        return self._probing

    def break_even(self, T: int) -> float:
        """Tokens past its first that a step of T positions (T - 1 drafts) must keep to pay:
        `update`'s switch-off rule, gain = tokens / (cost(T) + (T - 1) * draft_cost) >=
        min_gain, for a backend whose every drafting step costs cost(T) whatever it drafted
        (the monokernel's device drafter: one kernel of T positions runs many steps). Above
        T - 1, drafting there never pays."""
        return self.min_gain * (self.cost(T) + (T - 1) * self.draft_cost) - 1.0

    def launch_ended(self, paused: bool, probe: bool, steps: int) -> None:
        """A launch of drafting steps on the device ended; the device applied the switch-off
        rule itself after each step (`paused`: its running mean of accepted tokens per step
        fell below break_even). `probe`: the launch began with the probe step next_k() asked
        for (whose own count replaced the mean); `steps`: the steps the launch ran. As
        `update`: a probe that did not pay (paused after its one step) doubles the wait, one
        that did switches drafting on; a pause switches it off until the next probe."""
        if probe:
            self._probing = False
            if paused and steps <= 1:
                self.probe_every = min(2 * self.probe_every, self.max_probe_every)
                self._wait = self.probe_every
                return
            self.off, self.probe_every = False, self._wait0
        if paused and not self.off:
            self.off, self._wait = True, self.probe_every
            self.switched_off += 1

    def next_k(self) -> int:
        """Drafts to ask for on the next step (0: plain decode)."""
        if not self.adaptive:
            return self.k
        if self.off:
            if self._wait > 0:
                self._wait -= 1
                return 0
            self._probing = True
            return self.k_probe
        return self.best_k()[0]

    def take_plain(self, limit: int | None = None) -> int:
        """After next_k() returned 0: the further plain steps before the next probe, up to
        `limit` (what the sequence has left), taken at once (a backend that runs many steps
        per launch runs them in one); the rest of the wait carries over to the next
        sequence. 0 while drafting."""
        if not self.adaptive or not self.off or self._probing:
            return 0
        n = self._wait if limit is None else max(0, min(self._wait, limit))
        self._wait -= n
        return n

    def update(self, drafted: int, accepted: int) -> None:
        """A step verified `drafted` drafts and kept the first `accepted`."""
        if drafted <= 0 or not self.adaptive:
            return
        accepted = min(accepted, drafted)
        outcomes = [1.0] * accepted + ([0.0] if accepted < drafted else [])
        if self._probing:  # the probe measures the present: it replaces the stale estimate
            self.rate = sum(outcomes) / len(outcomes)
        else:
            for x in outcomes:
                self.rate += self.ewma * (x - self.rate)
        self.k = min(self.k + 1, self.k_max) if accepted == drafted else max(1, accepted + 1)
        pays = self.best_k(self.k_max)[1] >= self.min_gain
        if self._probing:
            self._probing = False
            if pays:
                self.off, self.probe_every = False, self._wait0
                self.k = max(self.k, self.k_probe)
            else:
                self.probe_every = min(2 * self.probe_every, self.max_probe_every)
                self._wait = self._off_wait()
        elif not pays and not self.off:
            self.off, self._wait = True, self._off_wait()
            self.switched_off += 1


def measure_step_costs(backend, Ts=(1, 2, 3, 4, 5, 6, 7, 8, 9), context: int = 128,
                       reps: int = 10) -> dict[int, float]:
    """Seconds of one T-position forward on `backend` (one with `new_cache` and `logits`, as the
    reference backend), after `context` positions, median of `reps`: a table for StepCost.
    Refuses a backend whose verification steps are not its `logits` forward (the monokernel's
    run in its own T-position kernels): timing `logits` there measures the wrong thing."""
    import statistics

    from agentfast.engine.errors import RequestError

    if getattr(backend, "verifies_in_kernel", False):
        raise RequestError(
            f"measure_step_costs times backend.logits, but the {backend.name} backend verifies "
            "drafts in its own T-position kernels: use its step-cost table, or measure them "
            "with `python -m agentfast.kernels.monokernel.tune --tsteps 4,8,16`")

    cache = backend.new_cache()
    toks = [i % 100 + 10 for i in range(context + max(Ts))]
    backend.logits(cache, toks[:context], 0)
    out = {}
    for T in Ts:
        times = []
        for r in range(reps + 2):
            t0 = time.perf_counter()
            backend.logits(cache, toks[context:context + T], context)
            if r >= 2:  # two warm-ups
                times.append(time.perf_counter() - t0)
        out[T] = statistics.median(times)
    return out
