"""Structured outputs inside the monokernel: the VM against a constrained reference, the kernel
(one program, CPU interpreter) against the VM buffer by buffer, on synthetic automata whose
tables have long exception rows (searched in several loads), forced and done states, accepting
states with EOS, and ids past the table's width; the device walk against the automaton's own;
a dead state is an error."""

from __future__ import annotations

import dataclasses

import mk_utils  # noqa: F401  (first: it sets TRITON_INTERPRET before triton is imported)
import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from mk_utils import PROMPT, V, cfg, harness, interpreted

from agentfast.engine.constraints.automaton import TokenAutomaton, compact_rows
from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import compare
from agentfast.kernels.monokernel.harness import Harness
from agentfast.kernels.monokernel.kernel import Monokernel, MonokernelError
from agentfast.kernels.monokernel.ops_sample import _c_next
from agentfast.kernels.monokernel.plan import Tiling

EOS = 7
N = 12


def synthetic(seed: int = 0, states: int = 10, width: int = 200) -> TokenAutomaton:
    """States 0..S-1 of a DAG (tokens lead to higher states) ending in S-1, which allows only
    EOS: every walk ends within S-1 tokens. States 2 and 6 allow one token (forced), 5 and 8
    a few, the others 3/4 of the `width` ids (long exception rows: over 1024 for width 2400,
    several loads); every third is accepting (EOS allowed, a loop)."""
    rng = np.random.default_rng(seed)
    S = states
    rows_t, rows_n = [], []
    for s in range(S):
        if s == S - 1:
            toks, nxt = np.array([EOS]), np.array([s])
        else:
            n = 1 if s % 4 == 2 else (int(rng.integers(2, 12)) if s % 3 == 2 else width * 3 // 4)
            toks = np.sort(rng.choice(np.setdiff1d(np.arange(width), [EOS]), n, replace=False))
            nxt = rng.integers(s + 1, min(S, s + 4), n)
            if s % 3 == 1:  # accepting
                toks, nxt = np.append(toks, EOS), np.append(nxt, s)
                o = np.argsort(toks)
                toks, nxt = toks[o], nxt[o]
        rows_t.append(toks.astype(np.int64))
        rows_n.append(nxt.astype(np.int64))
    words = (width + 31) // 32
    bm = np.zeros((S, words), dtype=np.uint32)
    for s, toks in enumerate(rows_t):
        for t in toks:
            bm[s, t >> 5] |= np.uint32(1 << (t & 31))
    default, exc_ptr, exc_tokens, exc_next = compact_rows(rows_t, rows_n)
    i32 = torch.int32
    return TokenAutomaton(
        bitmask=torch.from_numpy(bm.view(np.int32).copy()),
        default=torch.from_numpy(default).to(i32), exc_ptr=torch.from_numpy(exc_ptr).to(i32),
        exc_tokens=torch.from_numpy(exc_tokens).to(i32),
        exc_next=torch.from_numpy(exc_next).to(i32),
        accepting=torch.tensor([s % 3 == 1 or s == S - 1 for s in range(S)]),
        done=torch.tensor([s == S - 1 for s in range(S)]),
        forced=torch.tensor([int(r[0]) if r.size == 1 else -1 for r in rows_t], dtype=i32),
        eos_ids=(EOS,), vocab_size=width, max_exc=int(np.diff(exc_ptr).max()))


def upto_eos(tokens: list[int]) -> list[int]:
    """The tokens through the first EOS (a stop id in these tests)."""
    return tokens[:tokens.index(EOS) + 1] if EOS in tokens else tokens


def walk(a: TokenAutomaton, tokens: list[int]) -> int:
    """Checks every token against the automaton from its start; returns the final state."""
    s = a.state0
    for i, t in enumerate(tokens):
        assert s >= 0 and not a.is_done(s), f"token {i} ({t}) after the end"
        assert a.is_allowed(s, t), f"token {i} ({t}) not allowed in state {s}"
        s = a.next(s, t)
    return s


def _run_both(h, steps, sampling=False):
    b = h.bufs.clone()
    h.vm().run(steps)
    mk = Monokernel(h.plan, h.w)
    mk.launch(b, steps, sampling=sampling)
    return mk, b


def test_synthetic_automaton_is_what_the_tests_need():
    a = synthetic()
    assert a.max_exc > 64 and (a.forced >= 0).any() and a.is_done(a.num_states - 1)
    assert synthetic(3, width=2400).max_exc > 1024
    assert a.bitmask.shape[1] * 32 < V  # ids past the table: never allowed


@pytest.mark.parametrize("name", ["llama_gqa_tied_hd64", "qwen3_qknorm_hd128"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vm_constrained_greedy_equals_reference(name, seed):
    h = harness(name)
    a = synthetic(seed)
    ref = upto_eos(h.reference_greedy(PROMPT, N, automaton=a)[0])
    h.start(PROMPT, N, automaton=a, stop_ids=(EOS,))
    h.vm().run(N)
    assert h.tokens() == ref
    end = walk(a, ref if ref[-1] != EOS else ref[:-1])
    if ref[-1] == EOS:  # chosen in an accepting state, or written after a done one
        assert int(h.bufs.state[W.DONE]) == W.DONE_STOP and a.is_accepting(end)
    else:
        assert int(h.bufs.state[W.DONE]) == W.DONE_LENGTH


def test_vm_unconstrained_after_constrained_resets_the_tables():
    h = harness("llama_gqa_tied_hd64")
    h.start(PROMPT, N, automaton=synthetic())
    assert int(h.bufs.state[W.C_ON]) == 1 and h.bufs.c_bitmask.shape[0] == 10
    ref, _ = h.reference_greedy(PROMPT, 4)
    h.start(PROMPT, 4)
    assert int(h.bufs.state[W.C_ON]) == 0 and h.bufs.c_bitmask.numel() == 1
    h.vm().run(4)
    assert h.tokens() == ref


@interpreted
@pytest.mark.parametrize("name,T,params,vocab", [
    ("llama_gqa_tied_hd64", 1, {}, V),
    ("qwen3_qknorm_hd128", 1, {}, V),
    ("llama_gqa_tied_hd64", 1, dict(temperature=1.0), V),
    ("qwen3_qknorm_hd128", 1, dict(temperature=0.7, top_k=12, top_p=0.9), V),
    ("llama_obias_hd64", 4, {}, V),
    ("llama_gqa_tied_hd64", 1, {}, 2500),  # LM-head runs of several 1024-row blocks
    ("qwen3_qknorm_hd128", 1, dict(temperature=1.0), 2500),
])
def test_kernel_constrained_equals_vm(name, T, params, vocab):
    tiling = Tiling(bn=64, bn_lm=64 if T == 1 and vocab == V else 16, attn_splits=2,
                    attn_block=16, cand=16)
    if vocab == V:
        h = harness(name, T=T, tiling=tiling)
    else:
        torch.manual_seed(0)
        h = Harness.build(dataclasses.replace(cfg(name), vocab_size=vocab), 1, T, 48,
                          tiling=tiling)
    a = synthetic(3, width=vocab - 100)
    drafts = None
    if T > 1:  # the constrained greedy tokens, every third one wrong (often not allowed)
        ref = upto_eos(h.reference_greedy(PROMPT, N, automaton=a)[0])
        drafts = [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)]
    h.start(PROMPT, N, seed=5, automaton=a, stop_ids=(EOS,), drafts=drafts, **params)
    mk, b = _run_both(h, N, sampling=bool(params))
    mk.check(b)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    toks = h.tokens(b)
    assert toks == h.tokens() and len(toks) > 1
    walk(a, toks if toks[-1] != EOS else toks[:-1])
    if T > 1:
        assert toks == ref[:len(toks)]


@interpreted
def test_kernel_sampled_outputs_satisfy_the_constraint():
    h = harness("llama_gqa_tied_hd64")
    a = synthetic(4, states=6)
    mk = Monokernel(h.plan, h.w)
    ends = set()
    for seed in range(4):
        h.start(PROMPT, 20, temperature=1.0, seed=seed, automaton=a, stop_ids=(EOS,))
        mk.launch(h.bufs, 20, sampling=True)
        mk.check(h.bufs)
        toks = h.tokens()
        assert toks[-1] == EOS and int(h.bufs.state[W.DONE]) == W.DONE_STOP, toks
        ends.add(walk(a, toks[:-1]))
    assert all(a.is_accepting(s) for s in ends)


@interpreted
def test_dead_state_is_an_error():
    """A state whose row allows nothing (not a table compile() makes): every logit -inf, the
    choice is no token; the kernel records ERR_DEAD, as the VM does, and the host raises."""
    h = harness("llama_gqa_tied_hd64")
    a = synthetic(0)
    h.start(PROMPT, N, automaton=a)
    s = int(h.bufs.state[W.C_STATE])
    h.bufs.c_bitmask = h.bufs.c_bitmask.clone()
    h.bufs.c_bitmask[s] = 0
    mk, b = _run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert int(b.err[0]) == W.ERR_DEAD and int(b.state[W.DONE]) == W.DONE_ERROR
    assert h.tokens(b) == h.tokens()[:1]
    with pytest.raises(MonokernelError, match="not allowed by the constraint"):
        mk.check(b)


@triton.jit
def _walk_kernel(out, ss, ts, bm, dflt, ptr, etok, enxt, words):
    i = tl.program_id(0)
    tl.store(out + i, _c_next(tl.load(ss + i), tl.load(ts + i), bm, dflt, ptr, etok, enxt, words))


@interpreted
def test_device_walk_equals_the_automaton():
    """ops_sample._c_next (the kernel's advance: bitmask bit, exceptions searched 1024 at a
    time, default) against TokenAutomaton.next, on every state and tokens allowed or not,
    exceptions in the first and the second load of a row, ids past the table, a dead state."""
    a = synthetic(3, width=2400)
    pairs = [(-1, 5)]
    for s in range(a.num_states):
        lo, hi = int(a.exc_ptr[s]), int(a.exc_ptr[s + 1])
        exc = a.exc_tokens[lo:hi].tolist()
        allowed = a.allowed(s).tolist()
        picks = exc[:2] + exc[1020:1030] + exc[-2:] + allowed[:3] + allowed[-2:]
        picks += [t for t in range(0, 2500, 97) if t not in allowed][:4] + [2410, 2499]
        pairs += [(s, t) for t in picks]
    ss = torch.tensor([p[0] for p in pairs], dtype=torch.int32)
    ts = torch.tensor([p[1] for p in pairs], dtype=torch.int32)
    out = torch.full_like(ss, -7)
    _walk_kernel[(len(pairs),)](out, ss, ts, a.bitmask, a.default, a.exc_ptr, a.exc_tokens,
                               a.exc_next, a.bitmask.shape[1])
    want = [a.next(s, t) if s >= 0 else -1 for s, t in pairs]
    assert out.tolist() == want
    assert sum(w >= 0 for w in want) > len(pairs) // 2 and -1 in want
