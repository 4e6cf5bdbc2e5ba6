"""The n-gram drafter on the device (ops_sample.draft_next, CPU interpreter): its drafts equal
NgramDrafter's on the same history (random, repetitive, longer than one block of the lookup, no
match), trimmed as the host's propose_drafts trims them (stop ids; a constraint's rejections and
forced tokens, with the automaton states the next step needs); the kernel drafting after every
step of one launch against the VM buffer by buffer and against NgramDrafter step by step; the
running mean of accepted tokens, the counts and the pause; the step widths a switching kernel
picks (by kept drafts, by the lookup's match); greedy_accept against SAMPLE's loop."""

from __future__ import annotations

import random

import mk_utils  # noqa: F401  (first: it sets TRITON_INTERPRET before triton is imported)
import pytest
import torch
import triton
import triton.language as tl
from mk_utils import PROMPT, cfg, gpu, harness, interpreted, run_both
from test_mk_constraints import EOS, synthetic, upto_eos

from agentfast.engine.backends.drafting import propose_drafts
from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import compare
from agentfast.kernels.monokernel.kernel import Monokernel
from agentfast.kernels.monokernel.ops_sample import draft_next, greedy_accept
from agentfast.kernels.monokernel.sampling import match_span, ngram_match, ngram_propose
from agentfast.spec_decode import NgramDrafter


@triton.jit
def _draft_kernel(state, hist, drafts, stop_ids, n_hist, n_out, last, cs, con, bm, dflt, ptr,
                  etok, enxt, done, forced, T: tl.constexpr, TP2: tl.constexpr,
                  BLK: tl.constexpr):
    draft_next(state, hist, drafts, stop_ids, n_hist, n_out, last, cs, con, bm, dflt, ptr, etok,
               enxt, done, forced, T, TP2, BLK)


def device_draft(hist: list[int], k: int, nmin: int, nmax: int, T: int, blk: int = 1024,
                 stops: tuple = (), automaton=None, cs: int = 0, n_out: int = 3,
                 dev: str = "cpu"):
    """One draft_next on `hist`: (drafts, guessed, the states it stored or None, D_CONF)."""
    st = torch.zeros(W.STATE_SIZE, dtype=torch.int32)
    st[W.D_NMIN], st[W.D_NMAX], st[W.D_K], st[W.N_STOP] = nmin, nmax, k, len(stops)
    st[W.N_DRAFT] = st[W.D_GUESSED] = -5  # overwritten
    h = torch.tensor(hist + [-9] * 7, dtype=torch.int32)  # (past the history: never read)
    drafts = torch.full((n_out + 16,), -7, dtype=torch.int32)
    stop = torch.tensor(list(stops) or [-1], dtype=torch.int32)
    if automaton is not None:
        a = automaton.to(dev)
        tables = [a.bitmask, a.default, a.exc_ptr, a.exc_tokens, a.exc_next, a.done, a.forced]
        st[W.C_WORDS] = automaton.bitmask.shape[1]
        st[W.C_STATE:W.C_STATE + 16] = -3
    else:
        tables = list(W.no_tables(dev).values())
    st, h, drafts, stop = (t.to(dev) for t in (st, h, drafts, stop))
    _draft_kernel[(1,)](st, h, drafts, stop, len(hist), n_out, hist[-1], cs,
                        int(automaton is not None), *tables, T=T,
                        TP2=triton.next_power_of_2(T), BLK=blk)
    st, drafts = st.cpu(), drafts.cpu()
    n = int(st[W.N_DRAFT]) - n_out
    assert 0 <= n <= k and (drafts[:n_out] == -7).all() and (drafts[n_out + n:] == -7).all()
    states = st[W.C_STATE:W.C_STATE + T].tolist() if automaton is not None else None
    return drafts[n_out:n_out + n].tolist(), int(st[W.D_GUESSED]), states, int(st[W.D_CONF])


def _histories() -> list[tuple[str, list[int]]]:
    rng = random.Random(0)
    phrase = [rng.randrange(1000) for _ in range(12)]
    rep = []
    for _ in range(6):  # a phrase copied with edits, as agents copy tool output
        rep += [t if rng.random() > 0.1 else rng.randrange(1000) for t in phrase]
        rep += [rng.randrange(1000) for _ in range(rng.randrange(5))]
    rep += phrase[:5]  # copying again
    long_copy = [rng.randrange(10**6) for _ in range(2600)]
    long_copy[100:140] = long_copy[2560:2600]  # the only match is in the oldest block
    return [
        ("small vocabulary", [rng.randrange(6) for _ in range(80)]),
        ("random, large vocabulary", [rng.randrange(5000) for _ in range(300)]),
        ("repetitive", rep),
        ("no match", list(range(100, 400))),
        ("one token", [7]),
        ("two equal", [7, 7]),
        ("a run", [5] * 30),
        ("longer than a block", long_copy),
        ("longer than a block, random", [rng.randrange(300) for _ in range(2100)]),
    ]


@interpreted
@pytest.mark.parametrize("name,hist", _histories(), ids=[n for n, _ in _histories()])
def test_device_lookup_equals_ngram_drafter(name, hist):
    """Every (n-gram range, k) on blocks of 1024 and of 16 (many blocks), against
    NgramDrafter.propose and sampling.ngram_propose (the VM's)."""
    found, spans = 0, set()
    for nmin, nmax, k, T in [(1, 8, 3, 4), (2, 4, 7, 8), (3, 3, 1, 2), (1, 1, 5, 6),
                             (1, 8, 0, 4), (1, 8, 9, 4)]:
        want = NgramDrafter(nmax, nmin).propose(hist, min(k, T - 1))
        assert ngram_propose(hist, min(k, T - 1), nmin, nmax) == want
        for blk in (1024, 16):
            got, guessed, _, conf = device_draft(hist, k, nmin, nmax, T, blk)
            assert got == want and guessed == len(want), (nmin, nmax, k, blk, got, want)
            span = match_span(hist, *ngram_match(hist, nmin, nmax))
            assert conf == (span if want else 0), (nmin, nmax, k, blk, conf, span)
            spans.add(span - nmax if want else None)
        found += bool(want)
    if name in ("no match", "one token"):
        assert found == 0
    elif not name.startswith("random"):
        assert found >= 3  # the cases do exercise matches
    if name in ("repetitive", "a run", "longer than a block"):
        assert max(s for s in spans if s is not None) > 0  # matches extended past the n-gram


@triton.jit
def _accept_kernel(lm_val, lm_idx, tokens, stop_ids, host, hist, out, n_stop, n_out, max_new,
                   n_hist, h_cap, d_on, width, T: tl.constexpr, TP2: tl.constexpr,
                   NT: tl.constexpr):
    emitted, done, last = greedy_accept(lm_val, lm_idx, tokens, stop_ids, host, hist, n_stop,
                                        n_out, max_new, n_hist, h_cap, d_on, width, T, TP2, NT)
    tl.store(out, emitted)
    tl.store(out + 1, done)
    tl.store(out + 2, last)


def _accept_ref(val, idx, toks, stops, n_out, max_new, width):
    """sample_run's loop, one position after another: (tokens emitted, done)."""
    out, done = [], 0
    for t in range(width):
        best = max(val[t])
        a = min(i for v, i in zip(val[t], idx[t], strict=True) if v == best)
        out.append(a)
        if a in stops:
            return out, W.DONE_STOP
        if n_out + len(out) >= max_new:
            return out, W.DONE_LENGTH
        if t + 1 >= width or t + 1 >= len(toks) or toks[t + 1] != a:
            return out, done
    return out, done


@interpreted
def test_greedy_accept_equals_the_loop():
    """ops_sample.greedy_accept (a greedy T-step without a constraint, every position at once)
    against sample_run's per-position loop: the tokens (the largest tile maximum, the lowest
    id among equal ones across tiles), the run it emits (drafts kept while equal, cut at a
    stop id, at max_new, at the step's width), what it writes to the ring and the history
    (not past the history's capacity), its done code; every kind of ending comes up."""
    rng = random.Random(0)
    T, NT = 8, 300  # tile maxima per position: two loads of 256 (greedy_accept's CH at T = 8)
    ends = set()
    for case in range(40):
        width = rng.choice([1, 2, T, T])
        # few distinct values, so that equal maxima across tiles come up
        val = [[float(rng.randrange(4)) for _ in range(NT)] for _ in range(T)]
        # tile k's maximum is one of its 4 rows' ids (the LM head's tiles, in id order)
        idx = [[4 * k + rng.randrange(4) for k in range(NT)] for _ in range(T)]
        want_tok = [min(i for v, i in zip(val[t], idx[t], strict=True) if v == max(val[t]))
                    for t in range(T)]
        # the inputs: the token a position will choose, as a draft, for a while (then wrong)
        keep = rng.randrange(T)
        toks = [7] + [want_tok[t] if t < keep else 9999 for t in range(T - 1)]
        stops = rng.choice([(), (want_tok[rng.randrange(T)],), (9998,)])
        n_out, max_new = 3, 3 + rng.choice([1, 4, 100])
        n_hist, h_cap, d_on = 20, 20 + rng.choice([2, 100]), rng.choice([0, 1])
        host = torch.full((W.HOST_HDR + 64,), -1, dtype=torch.int32)
        hist = torch.full((128,), -1, dtype=torch.int32)
        out = torch.zeros(3, dtype=torch.int32)
        stop_t = torch.tensor(list(stops) or [-1], dtype=torch.int32)
        _accept_kernel[(1,)](torch.tensor(val, dtype=torch.float32),
                             torch.tensor(idx, dtype=torch.int32),
                             torch.tensor(toks, dtype=torch.int32), stop_t, host, hist, out,
                             len(stops), n_out, max_new, n_hist, h_cap, d_on, width, T=T,
                             TP2=T, NT=NT)
        got, done = _accept_ref(val, idx, toks, set(stops), n_out, max_new, width)
        emitted = len(got)
        ends.add(done if done else "width" if emitted == width else "draft")
        assert out.tolist() == [emitted, done, got[-1]], (case, out.tolist(), got, done)
        assert host[W.HOST_HDR + n_out:W.HOST_HDR + n_out + emitted].tolist() == got
        assert (host[W.HOST_HDR + n_out + emitted:] == -1).all()
        room = max(0, min(emitted, h_cap - n_hist)) if d_on else 0
        assert hist[n_hist:n_hist + room].tolist() == got[:room]
        assert (hist[n_hist + room:] == -1).all() and (hist[:n_hist] == -1).all()
    assert ends == {W.DONE_STOP, W.DONE_LENGTH, "width", "draft"}, ends


@interpreted
def test_device_lookup_cut_after_a_stop_id():
    hist = [1, 2, 3, 4, 5, 6, 1, 2]
    assert device_draft(hist, 5, 1, 8, 6, stops=(5, 99))[:2] == ([3, 4, 5], 3)
    assert device_draft(hist, 5, 1, 8, 6, stops=(3,))[:2] == ([3], 1)
    assert device_draft(hist, 5, 1, 8, 6, stops=(6,) * 200)[:2] == ([3, 4, 5, 6], 4)  # 2 loads


@interpreted
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_device_drafts_walk_the_constraint_as_the_host(seed):
    """With a constraint: the drafts and their count equal propose_drafts(NgramDrafter) with
    the automaton (cut before a rejected token and after EOS-only states and stop ids, forced
    tokens drafted in place of or past the proposal), and the states stored for the next step
    equal the automaton's walk over its inputs (drafts, then the last token as padding)."""
    a = synthetic(seed)
    rng = random.Random(seed)
    kinds = set()
    for case in range(40):
        hist = [rng.randrange(40) for _ in range(rng.randrange(2, 60))]
        cs = rng.randrange(a.num_states - 1)
        stops = (EOS,) if case % 2 else (EOS, hist[-2])
        T = rng.choice([2, 4, 8])
        k = rng.randrange(T + 1)
        want, guessed = propose_drafts(NgramDrafter(), hist, min(k, T - 1), min(k, T - 1), a,
                                       cs, frozenset(stops))
        got, g, states, conf = device_draft(hist, k, 1, 8, T, 16, stops, a, cs)
        assert (got, g) == (want, guessed), (case, hist, cs, got, want)
        span = match_span(hist, *ngram_match(hist, 1, 8)) if guessed else 0
        assert conf == max(span, len(want) - guessed), (case, conf, span)
        toks = [hist[-1]] + got + [hist[-1]] * (T - 1 - len(got))
        assert states == W.constraint_states(a, cs, toks), case
        kinds.add((len(got) > guessed, guessed > 0, len(got) < len(
            NgramDrafter().propose(hist, min(k, T - 1)))))
    assert (True, False, True) in kinds or (True, True, False) in kinds  # forced tokens
    assert any(g for _, g, _ in kinds)  # proposals kept
    assert any(c for _, _, c in kinds)  # proposals cut


def _start_drafting(h, first: int, history: list[int], drafter: NgramDrafter, k: int,
                    **kw) -> list[int]:
    """start_drafting plus the first step's drafts from the host (as the backend does)."""
    W.start_drafting(h.bufs, history, min_ngram=drafter.min_ngram, max_ngram=drafter.max_ngram,
                     k=k, **kw)
    props, guessed = propose_drafts(drafter, history, k, k, None, 0, frozenset())
    W.set_step_inputs(h.bufs, h.w, h.plan.T, props, guessed=guessed,
                      switch=kw.get("switch", False), narrow=bool(kw.get("narrow", 0)),
                      conf=_conf(history, drafter) if props else 0)
    return props


def _conf(hist: list[int], d: NgramDrafter) -> int:
    """weights.D_CONF for a proposal on `hist` (no constraint): the lookup's match, extended."""
    return match_span(hist, *ngram_match(hist, d.min_ngram, d.max_ngram))


def test_host_setup_writes_what_the_device_reads():
    """start_drafting writes its slots as one slice (D_ON .. D_BY_WIDTH + 2) and leaves the
    rest of the state alone (KEEP_HIDDEN, past it); set_step_inputs given the last token and
    the match rule by the host (no device reads) leaves the buffers as reading them does."""
    h = harness("llama_gqa_tied_hd64", T=4)
    first = h.start(PROMPT, 12, stop_ids=(7,))
    st0 = h.bufs.state.clone()
    h.bufs.state[W.KEEP_HIDDEN] = 1
    history = PROMPT + [first]
    W.start_drafting(h.bufs, history, min_ngram=1, max_ngram=4, k=3, accepted=1.5,
                     switch=True, narrow=2, match_min=2, match_wide=4)
    st = h.bufs.state
    assert int(st[W.KEEP_HIDDEN]) == 1 and int(st[46]) == 0
    assert torch.equal(st[:W.D_ON], st0[:W.D_ON]) and torch.equal(st[W.M_ON:W.KEEP_HIDDEN],
                                                                  st0[W.M_ON:W.KEEP_HIDDEN])
    assert (int(st[W.N_HIST]), int(st[W.D_K]), int(st[W.D_EWMA]), int(st[W.D_NEED]),
            int(st[W.D_MATCH_MIN]), int(st[W.D_MATCH_WIDE])) == (len(history), 3, 3 << 15, 1, 2,
                                                                4)
    assert h.bufs.hist[:len(history)].tolist() == history
    assert h.bufs.stop_ids.tolist() == [7] and h.bufs.mode == W.GREEDY
    for drafts, conf in (([5, 9], 3), ([5], 1), ([], 0), ([5, 9, 4], 6)):
        read, told = h.bufs.clone(), h.bufs.clone()
        a = W.set_step_inputs(read, h.w, 4, drafts, guessed=len(drafts), switch=True,
                              narrow=True, conf=conf)
        b = W.set_step_inputs(told, h.w, 4, drafts, guessed=len(drafts), switch=True,
                              narrow=True, conf=conf, last=first, rule=(2, 4))
        assert a == b == [first, *drafts] + [first] * (3 - len(drafts))
        assert compare(read, told) is None and torch.equal(read.state, told.state)
        assert torch.equal(told.x[:4], h.w.embed[torch.tensor(b)])
    assert int(told.state[W.STEP_ONE]) == 0  # a match of 6 >= match_wide: all positions


@interpreted
@pytest.mark.parametrize("name,seed_history", [("qwen3_qknorm_hd128", "copy"),
                                               ("llama_gqa_tied_hd64", "prompt")])
def test_kernel_drafts_on_the_device_equals_vm(name, seed_history):
    """One launch drafting after every step: buffers equal the VM's (history, drafts, counts,
    state), the tokens are the reference's greedy ones; "copy" seeds the device history with
    the reference continuation itself, so the lookup proposes it and drafts get accepted."""
    T, n = 4, 12
    h = harness(name, T=T)
    ref, _ = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    history = (ref + [first]) if seed_history == "copy" else PROMPT + [first]
    _start_drafting(h, first, history, NgramDrafter(), T - 1, accepted=1.0)
    b = run_both(h, n)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    toks = h.tokens(b)
    assert toks == ref[:n] and int(b.state[W.DONE]) == W.DONE_LENGTH
    steps = int(b.state[W.STEPS])
    assert b.hist[:len(history) + n - 1].tolist() == history + toks[1:]
    assert int(b.state[W.N_HIST]) == len(history) + n - 1
    st = b.state
    assert int(st[W.D_ACCEPTED]) <= int(st[W.D_DRAFTED]) and int(st[W.D_STEPS]) <= steps
    if seed_history == "copy":
        assert steps < n - 3 and int(st[W.D_ACCEPTED]) >= n - 1 - steps - 2, steps


@interpreted
def test_kernel_drafts_equal_ngram_drafter_step_by_step():
    """One step per launch: after each, the drafts the kernel wrote for the next step (and put
    in its inputs) are NgramDrafter's on the history so far, and the counts are the host's."""
    T, n = 4, 8
    h = harness("llama_obias_hd64", T=T)
    ref, _ = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    d = NgramDrafter(max_ngram=3)
    history = PROMPT + ref[3:] + PROMPT[:2] + [first]  # a partial copy: some drafts fail
    props = _start_drafting(h, first, history, d, T - 1)
    mk = Monokernel(h.plan, h.w)
    hist, seen, counts = list(history), 1, [0, 0, 0]
    while not int(h.bufs.state[W.DONE]):
        mk.launch(h.bufs, 1)
        mk.check(h.bufs)
        toks = h.tokens()[seen:]
        seen += len(toks)
        hist += toks
        if props:
            counts = [counts[0] + 1, counts[1] + len(props),
                      counts[2] + min(len(toks) - 1, len(props))]
        if int(h.bufs.state[W.DONE]):
            break
        props = d.propose(hist, T - 1)
        n_out = int(h.bufs.state[W.N_OUT])
        assert int(h.bufs.state[W.N_DRAFT]) == n_out + len(props)
        assert h.bufs.drafts[n_out:n_out + len(props)].tolist() == props
        assert h.bufs.tokens.tolist() == [hist[-1]] + props + [hist[-1]] * (T - 1 - len(props))
    assert h.tokens() == ref[:n]
    st = h.bufs.state
    assert [int(st[W.D_STEPS]), int(st[W.D_DRAFTED]), int(st[W.D_ACCEPTED])] == counts
    assert counts[2] > 0 and counts[1] > counts[2]


@interpreted
def test_kernel_constrained_drafting_equals_vm():
    """A constraint with forced states and stop ids: the kernel's device drafts (the walk that
    also stores the next step's states) against the VM, buffer by buffer."""
    T, n = 4, 12
    h = harness("llama_obias_hd64", T=T)
    a = synthetic(3)
    ref = upto_eos(h.reference_greedy(PROMPT, n, automaton=a)[0])
    first = h.start(PROMPT, n, automaton=a, stop_ids=(EOS,))
    W.start_drafting(h.bufs, ref + [first], min_ngram=1, max_ngram=8, k=T - 1)
    b = run_both(h, n)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == ref[:len(h.tokens(b))] and len(h.tokens(b)) > 2
    assert int(b.state[W.STEPS]) < len(h.tokens(b)) - 1  # drafts (or forced tokens) accepted


def _switching(h, n: int, atol: float, tol: float = 1e-4, history: list[int] | None = None,
               match: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Per-step switching (start_drafting(switch=True)), one step per launch of h's T-position
    kernel: a step the drafter has nothing for runs as one position (STEP_ONE: one token out,
    its logits row the reference's, the rows past it not written), a step with drafts at all
    T, or, in a kernel with narrow steps (Tiling.narrow), narrow (STEP_ONE 2: at most `narrow`
    tokens out) unless the step before was not one position and kept all of a narrow step's
    drafts; after each step STEP_ONE says that; the VM, stepping along, has every buffer the
    kernel has; the tokens are the reference's greedy ones, and every kind of step ran.
    `history`: the device's history (default: a short copy, some steps draft). `match`:
    start_drafting's (match_min, match_wide, need): widths by the lookup's match length."""
    T, nw = h.plan.T, h.plan.tiling.narrow
    ref, want_logits = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    d = NgramDrafter(max_ngram=3)
    if history is None:
        history = PROMPT + ref[3:6] + [first]  # a short copy: some steps draft, others cannot
    else:
        history = history + [first]
    m_min, m_wide, need = match
    props = _start_drafting(h, first, history, d, T - 1, switch=True, narrow=nw,
                            match_min=m_min, match_wide=m_wide, need=need)

    def want(props, code, kept, conf):  # the rule of ops_sample.sample_run
        if not props or conf < m_min:
            return 1
        if not nw:
            return 0
        full = code != 1 and kept >= (need or nw - 1)
        return 0 if full or 0 < m_wide <= conf else 2

    assert int(h.bufs.state[W.STEP_ONE]) == want(props, None, 0, _conf(history, d))
    b = h.bufs.clone()  # the kernel's; h.bufs the VM's
    vm, mk = h.vm(), Monokernel(h.plan, h.w)
    hist, seen, kinds, by = list(history), 1, set(), [0, 0, 0]
    while not int(b.state[W.DONE]):
        code = int(b.state[W.STEP_ONE])
        by[code] += 1
        for buf in (h.bufs, b):
            buf.logits.fill_(-123.0)
        vm.run(1)
        mk.launch(b, 1)
        mk.check(b)
        assert compare(h.bufs, b, tol=tol) is None, compare(h.bufs, b, tol=tol)
        toks = h.tokens(b)[seen:]
        kinds.add(code)
        assert len(toks) <= {1: 1, 2: nw}.get(code, T)
        if code == 1:
            got = b.logits[0].float().cpu()
            want_row = want_logits[seen].float().cpu()
            assert torch.allclose(got, want_row, atol=atol, rtol=atol), \
                (got - want_row).abs().max()
            assert (b.logits[1:] == -123.0).all()  # one position computed
        if code == 2:
            assert (b.logits[nw:] == -123.0).all()  # the narrow positions only
        seen += len(toks)
        hist += toks
        if int(b.state[W.DONE]):
            break
        props = d.propose(hist, T - 1)
        conf = _conf(hist, d) if props else 0
        assert int(b.state[W.D_CONF]) == conf
        assert int(b.state[W.STEP_ONE]) == want(props, code, len(toks) - 1, conf)
        n_out = int(b.state[W.N_OUT])
        assert b.drafts[n_out:n_out + len(props)].tolist() == props
    assert h.tokens(b) == ref[:n]
    assert kinds == ({0, 1, 2} if nw else {0, 1}), kinds
    assert b.state[W.D_BY_WIDTH:W.D_BY_WIDTH + 3].tolist() == by
    assert int(b.state[W.D_STEPS]) <= int(b.state[W.STEPS])


@interpreted
@pytest.mark.parametrize("name,T,one_tiles", [("llama_obias_hd64", 4, False),
                                              ("qwen3_qknorm_hd128", 4, False),
                                              ("llama_obias_hd64", 8, True),
                                              ("qwen3_qknorm_hd128", 4, True)])
def test_kernel_switches_per_step(name, T, one_tiles):
    """Tiling.one_tiles: the records in the T = 1 plan's matvec tiles, the T-steps on their
    own (T = 8: tl.dot tiles of 16 rows and 64 columns over runs of 1-2 rows; T = 4: FMA)."""
    from dataclasses import replace

    from mk_utils import FAST

    tiling = FAST
    if one_tiles:
        tiling = replace(FAST, bn=0, one_tiles=True, chunk=256 if T == 8 else FAST.chunk)
    h = harness(name, T=T, tiling=tiling)
    if one_tiles:  # the T-steps' tiles differ from the records' in some op
        assert any(h.plan.blocks[op] != h.plan.blocks_t[op] for op in h.plan.blocks)
    _switching(h, 12, 1e-4)


@interpreted
@pytest.mark.parametrize("name,match,om,kinds,nm", [
    ("llama_obias_hd64", (0, 0, 0), False, False, False),
    ("qwen3_qknorm_hd128", (0, 0, 0), False, False, False),
    ("llama_obias_hd64", (2, 4, 8), False, False, False),
    ("llama_obias_hd64", (0, 0, 0), True, False, False),
    ("qwen3_qknorm_hd128", (2, 4, 8), True, True, False),
    ("llama_obias_hd64", (2, 4, 8), True, True, True),
    ("qwen3_qknorm_hd128", (0, 0, 0), True, False, True)],
    ids=["llama-kept", "qwen3-kept", "llama-match", "llama-kept-om", "qwen3-match-om-kinds",
         "llama-match-nm-kinds", "qwen3-kept-nm"])
def test_kernel_switches_among_three_widths(name, match, om, kinds, nm):
    """Tiling.narrow: a T = 8 kernel with 2-position steps; its drafting steps run narrow and
    widen to 8 after a step that kept its draft (the device history: the reference's
    continuation, so long copies come up); with `match` (2, 4, 8) by the lookup's match
    length instead: one position below 2, wide from 4 on. `om` (Tiling.oproj_merge, the
    default): one-position steps run OPROJ_M, the others OPROJ; off: every step OPROJ (the
    last split of each kv head merges). `kinds` (Tiling.kind_tables): each step kind walks
    its own records, those idle in it dropped. `nm` (Tiling.narrow_merge): the narrow steps
    run OPROJ_M too (over their 2 positions; with kind tables, a table of their own)."""
    from dataclasses import replace

    from mk_utils import FAST

    h = harness(name, T=8, tiling=replace(FAST, narrow=2, oproj_merge=None if om else False,
                                          kind_tables=kinds, narrow_merge=nm))
    assert h.plan.oproj_merge == om and h.plan.kind_tables == kinds
    assert h.plan.narrow_merge == nm and len(h.plan.kinds) == (3 if kinds and nm else
                                                               2 if kinds else 1)
    ref, _ = h.reference_greedy(PROMPT, 24)
    _switching(h, 16, 1e-4, history=PROMPT + ref[:4] + [9, 9] + ref[4:9], match=match)


@interpreted
def test_switching_below_the_floor_probes():
    """Per-step switching with a floor the mean cannot reach (drafts of the reference's own
    continuation, so the lookup always has some): after the first step the steps run as one
    position anyway, except a probe once the wait reaches D_EVERY, whose count replaces the
    mean and which doubles the wait (to D_EVERY_MAX); one step per launch, the state after
    each against the rule computed here and every buffer against the VM's; the tokens stay the
    reference's."""
    T, n, alpha, floor = 4, 16, 0.25, 3.5
    h = harness("llama_gqa_tied_hd64", T=T)
    ref, _ = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    d = NgramDrafter()
    history = ref + [first]  # the continuation itself: drafts every step
    _start_drafting(h, first, history, d, T - 1, accepted=0.0, alpha=alpha, floor=floor,
                    switch=True, probe_every=2, max_probe_every=4)
    b = h.bufs.clone()
    vm, mk = h.vm(b), Monokernel(h.plan, h.w)
    q = W.q16
    ew, probe, wait, every, seen, kinds = 0, 0, 0, 2, 1, []
    while not int(h.bufs.state[W.DONE]):
        one = int(h.bufs.state[W.STEP_ONE])
        vm.run(1)
        mk.launch(h.bufs, 1)
        mk.check(h.bufs)
        assert compare(b, h.bufs) is None, compare(b, h.bufs)
        emitted = int(h.bufs.host[W.H_PROGRESS]) - seen
        seen += emitted
        kinds.append("probe" if probe and not one else "one" if one else "T")
        if not one:
            x = (emitted - 1) << 16
            ew = x if probe else ew + (((x - ew) * q(alpha)) >> 16)
            if probe:
                every = min(2 * every, 4) if ew < q(floor) else 2
            probe = 0
        st = h.bufs.state
        if int(st[W.DONE]):
            break
        nd = int(st[W.N_DRAFT]) - int(st[W.N_OUT])
        one_next = int(nd <= 0)
        if ew < q(floor):
            wait += 1
            probe = int(nd > 0 and wait >= every)
            wait = 0 if probe else wait
            one_next = 1 - probe
        assert (int(st[W.D_EWMA]), int(st[W.STEP_ONE]), int(st[W.D_WAIT]),
                int(st[W.D_EVERY]), int(st[W.D_PROBE])) == (ew, one_next, wait, every, probe)
    assert h.tokens() == ref[:n]
    assert kinds[0] == "T" and "probe" in kinds and kinds.count("one") >= 4, kinds
    assert every == 4  # probes that did not pay doubled the wait, to the cap


@interpreted
def test_one_position_step_keeps_the_kernels_stat_layout():
    """Sampling (top-k / top-p) in a one-position step of a T = 4 kernel: the LM head's
    per-tile maxima and sums of exp((l - max) / temperature) land where the T = 4 kernel's
    SAMPLE reads them (lm_stat [2, T, tiles]), computed from the logits row the step wrote."""
    h = harness("llama_gqa_tied_hd64", T=4)
    h.start(PROMPT, 4, temperature=0.8, top_k=8, top_p=0.9)
    assert int(h.bufs.state[W.MODE]) == W.FILTERED
    h.bufs.state[W.STEP_ONE] = 1
    h.bufs.lm_stat.fill_(-5.0)
    mk = Monokernel(h.plan, h.w)
    mk.launch(h.bufs, 1, sampling=True)
    mk.check(h.bufs)
    assert len(h.tokens()) == 2
    bn, V = h.plan.bn_lm, h.cfg.vocab_size
    nt = h.plan.n_lm_tiles
    sc = torch.nn.functional.pad(h.bufs.logits[0] / 0.8, (0, nt * bn - V),
                                 value=float("-inf")).view(nt, bn)
    mx = sc.amax(-1)
    assert torch.allclose(h.bufs.lm_stat[0, 0], mx, atol=1e-5)
    assert torch.allclose(h.bufs.lm_stat[1, 0], torch.exp(sc - mx[:, None]).sum(-1), atol=1e-4)
    assert (h.bufs.lm_stat[:, 1:] == -5.0).all()  # the other positions' rows untouched


@interpreted
def test_mean_pause_and_probe():
    """The running mean (Q16 EWMA of the tokens each step keeps past its first) and the
    pause, one step per launch, kernel and VM in lockstep: after each step the mean is the
    host's formula; the step whose mean falls below the floor ends with DONE_PAUSE (the host
    ring's done flag untouched); the next launch, a probe, replaces the mean by its count."""
    T, n, alpha, floor = 4, 10, 0.25, 0.4
    h = harness("qwen3_qknorm_hd128", T=T)
    ref, _ = h.reference_greedy(PROMPT, n)
    first = h.start(PROMPT, n)
    _start_drafting(h, first, PROMPT + [first], NgramDrafter(), T - 1, accepted=0.5,
                    alpha=alpha, floor=floor)
    b = h.bufs.clone()
    vm, mk = h.vm(), Monokernel(h.plan, h.w)
    mean, probe, pauses, seen, done = W.q16(0.5), False, 0, 1, 0
    while done in (0, W.DONE_PAUSE):
        vm.run(1)
        mk.launch(b, 1)
        mk.check(b)
        assert compare(h.bufs, b) is None, compare(h.bufs, b)
        emitted = int(b.host[W.H_PROGRESS]) - seen
        seen += emitted
        x = (emitted - 1) << 16
        mean = x if probe else mean + (((x - mean) * W.q16(alpha)) >> 16)
        assert int(b.state[W.D_EWMA]) == mean
        done = int(b.state[W.DONE])
        if done == W.DONE_PAUSE:
            assert mean < W.q16(floor) and int(b.host[W.H_DONE]) == 0
            pauses += 1
            for buf in (h.bufs, b):  # what the host does before a probe launch
                buf.state[W.DONE] = 0
                buf.state[W.D_PROBE] = 1
        elif done == 0:
            assert mean >= W.q16(floor)
        probe = done == W.DONE_PAUSE
    assert done == W.DONE_LENGTH and h.tokens(b) == ref[:n]
    assert pauses >= 1


@interpreted
def test_plain_kernel_keeps_the_history():
    """The T = 1 kernel (a plain stretch between drafting launches) appends what it emits to
    the device history and drafts nothing; the VM too."""
    h = harness("llama_gqa_tied_hd64")
    ref, _ = h.reference_greedy(PROMPT, 6)
    first = h.start(PROMPT, 6)
    W.start_drafting(h.bufs, PROMPT + [first], min_ngram=1, max_ngram=8, k=3)
    b = run_both(h, 6)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == ref
    assert b.hist[:len(PROMPT) + 6].tolist() == PROMPT + ref
    assert int(b.state[W.N_HIST]) == len(PROMPT) + 6 and int(b.state[W.N_DRAFT]) == 0
    assert int(b.state[W.D_STEPS]) == 0 and int(b.state[W.D_EWMA]) == 0


@gpu
def test_gpu_device_lookup_equals_ngram_drafter():
    """The compiled lookup (CUDA) on the histories above, blocks of 1024."""
    for _, hist in _histories():
        for nmin, nmax, k, T in [(1, 8, 3, 4), (2, 4, 7, 8)]:
            want = NgramDrafter(nmax, nmin).propose(hist, min(k, T - 1))
            assert device_draft(hist, k, nmin, nmax, T, dev="cuda")[:2] == (want, len(want))


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_kernel_drafts_on_the_device_equals_vm(dtype):
    """Many programs on the H200, T = 4, drafting after every step of one launch (the history
    seeded with the reference continuation: drafts get accepted)."""
    from agentfast.kernels.monokernel.harness import Harness

    torch.manual_seed(0)
    T, n = 4, 12
    h = Harness.build(cfg("qwen3_qknorm_hd128"), 264, T, 64, device="cuda", dtype=dtype)
    ref, _ = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    _start_drafting(h, first, ref + [first], NgramDrafter(), T - 1)
    b = run_both(h, n)
    if dtype == torch.float32:
        assert compare(h.bufs, b) is None
        assert h.tokens(b) == ref[:n] and int(b.state[W.STEPS]) < n - 3
    else:  # bf16: a tile's argmax may pick the other of two logits equal after rounding
        assert compare(h.bufs, b, tol=3e-2, skip=("lm_idx",)) is None
        assert h.tokens(b) == h.tokens()


@gpu
@pytest.mark.parametrize("match,kinds,nm", [((0, 0, 0), False, False), ((2, 4, 16), False, False),
                                            ((2, 4, 16), True, False), ((2, 4, 16), True, True),
                                            ((0, 0, 0), False, True)],
                         ids=["kept", "match", "match-kinds", "match-kinds-nm", "kept-nm"])
def test_gpu_kernel_switches_among_three_widths(match, kinds, nm):
    """The same on the H200 with 264 programs: a T = 16 kernel with 2-position steps (fp32);
    widths by the kept drafts, and by the lookup's match (the backend's default rule); with
    each step kind's own records (Tiling.kind_tables); with O-proj merging the narrow steps'
    attention (Tiling.narrow_merge)."""
    from agentfast.kernels.monokernel.harness import Harness
    from agentfast.kernels.monokernel.plan import Tiling

    torch.manual_seed(0)
    h = Harness.build(cfg("llama_obias_hd64"), 264, 16, 64, device="cuda", dtype=torch.float32,
                      tiling=Tiling(narrow=2, kind_tables=kinds, narrow_merge=nm))
    assert h.plan.kind_tables == kinds and h.plan.narrow_merge == nm
    ref, _ = h.reference_greedy(PROMPT, 28)
    _switching(h, 16, 1e-3, history=PROMPT + ref[:4] + [9, 9] + ref[4:9], match=match)


@gpu
@pytest.mark.parametrize("name,T,one_tiles", [("llama_obias_hd64", 4, False),
                                              ("qwen3_qknorm_hd128", 4, False),
                                              ("llama_obias_hd64", 16, True),
                                              ("qwen3_qknorm_hd128", 8, True)])
def test_gpu_kernel_switches_per_step(name, T, one_tiles):
    """The same on the H200 with 264 programs (fp32: the T = 1 paths of the T-position
    kernel, its 8 KV splits merged, against the reference's logits); Tiling.one_tiles."""
    from agentfast.kernels.monokernel.harness import Harness
    from agentfast.kernels.monokernel.plan import Tiling

    torch.manual_seed(0)
    _switching(Harness.build(cfg(name), 264, T, 64, device="cuda", dtype=torch.float32,
                             tiling=Tiling(one_tiles=one_tiles)), 12, 1e-3)
