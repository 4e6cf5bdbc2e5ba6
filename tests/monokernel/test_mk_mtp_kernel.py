"""The MTP module inside the kernel (plan(mtp=True), CPU interpreter, one program): after SAMPLE
the module's input projection (MTP_EH), its decoder layer as layer L over its own rows of x and
its own K/V, its head over the step's last kept position and MTP_SAMPLE, which turns a coming
one-position step into a narrow one with the module's draft. Kernel buffers equal the VM's; the
draft of every step equals the host MtpDrafter's on the same history (the reference
transformer's hidden states), and the module's K/V its K/V; output tokens equal plain greedy
decode (drafts verified, not trusted); the probability floor keeps unlikely drafts out."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from mk_utils import FAST, PROMPT, cfg, gpu, interpreted

from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import compare
from agentfast.kernels.monokernel.harness import Harness, random_state_dict
from agentfast.kernels.monokernel.kernel import Monokernel
from agentfast.kernels.monokernel.plan import FILL_NEXT, MTP_EH, MTP_SAMPLE, Tiling, plan
from agentfast.kernels.monokernel.vm import VM
from agentfast.spec_decode import mtp as M

T, N, MAX_LEN = 4, 14, 48
# a prompt after which the tiny models repeat tokens: the lookup drafts, steps keep several
# positions (the module then runs over several rows); elsewhere the module drafts
REPEAT = PROMPT + [15, 94, 28, 76, 6] + PROMPT


def _harness(name: str, floor: float = 0.0, device: str = "cpu", programs: int = 1,
             tiling: Tiling = FAST, lazy: bool = False, n: int = N) -> tuple[Harness, dict]:
    c = cfg(name)
    torch.manual_seed(0)
    msd = M.init_module(c, random_state_dict(c), seed=3)
    h = Harness.build(c, programs, T, MAX_LEN, tiling=replace(tiling, narrow=2), device=device,
                      mtp=lambda sd: M.build_module(c, msd, 0, device, torch.float32))
    first = h.start(REPEAT, n)
    W.start_drafting(h.bufs, REPEAT + [first], min_ngram=1, max_ngram=3, k=T - 1, switch=True,
                     narrow=2, need=T)
    h.bufs.state[W.STEP_ONE] = 1
    W.start_mtp(h.bufs, floor, lazy=lazy)
    return h, msd


def test_plan_runs_the_module_after_sample():
    """The module's ops follow SAMPLE; the next step's first op waits for MTP_SAMPLE; its layer
    is layer L (tickets for L + 1 layers)."""
    c = cfg("llama_gqa_tied_hd64")
    p = plan(c, 3, T, MAX_LEN, tiling=replace(FAST, narrow=2), mtp=True)
    names = [o.opcode for o in p.ops[p.sample_seq + 1:]]
    # MTP_EH, the layer (QKV, ATTN, OPROJ_M, OPROJ, GATEUP, DOWN), its LMHEAD, MTP_SAMPLE
    assert names[0] == MTP_EH and names[-1] == MTP_SAMPLE and len(names) == 8 + p.oproj_merge
    assert all(o.layer == c.num_layers for o in p.ops[p.sample_seq + 1:])
    assert p.end_seq == len(p.ops) - 1 > p.sample_seq
    first = [i for i in p.instructions() if i.seq == 0]
    assert first and all(i.wait_seq == p.end_seq and i.wait_prev for i in first)
    assert p.n_counters == len(p.ops) + (c.num_layers + 1) * c.num_kv_heads
    with pytest.raises(AssertionError):
        plan(c, 3, T, MAX_LEN, ranks=2, mtp=True)


@interpreted
@pytest.mark.parametrize("name", ["llama_gqa_tied_hd64", "qwen3_qknorm_hd128"])
def test_kernel_mtp_equals_vm_and_the_host_drafter(name):
    h, msd = _harness(name)
    b = h.bufs.clone()
    drafter = M.MtpDrafter.from_weights(h.cfg, msd, h.w.embed, h.w.lm_head, MAX_LEN)
    vm, L = h.vm(), h.cfg.num_layers
    drafts = 0
    for _ in range(N):
        vm.run(1)
        if int(h.bufs.state[W.DONE]):
            break
        hist = REPEAT + h.tokens()
        cache = h.model.new_cache(initial=MAX_LEN, keep_hidden=True)
        h.model.forward(torch.tensor(hist[:-1]), 0, cache)
        drafter._states.clear()
        drafter.bind(cache)
        want = drafter.propose(hist, 1)
        n = len(hist) - 1  # the module's positions so far (each needs the token after it)
        torch.testing.assert_close(h.cache.k[L, :, :n], drafter._state(cache).kv.k[0, :, :n],
                                   rtol=1e-4, atol=1e-4)
        if int(h.bufs.state[W.M_USED]):  # the head ran (the lookup had nothing): its draft
            d = int(h.bufs.lm_idx[T, int(torch.argmax(h.bufs.lm_val[T]))])
            assert want == [d] == [int(h.bufs.tokens[1])], len(hist)
            drafts += 1
    mk = Monokernel(h.plan, h.w)
    mk.launch(b, N)
    mk.check(b)
    assert compare(h.bufs, b, skip=("ctr",)) is None, compare(h.bufs, b, skip=("ctr",))
    ref, _ = h.reference_greedy(REPEAT, N)
    assert h.tokens(b) == h.tokens() == ref
    st = b.state
    assert drafts > 0 and int(st[W.M_STEPS]) == drafts  # the module's drafts were verified
    assert int(st[W.D_ACCEPTED]) > 0  # steps that kept several positions (module rows > 1)
    assert int(st[W.STEPS]) < N - 1


@interpreted
@pytest.mark.parametrize("name", ["llama_gqa_tied_hd64", "qwen3_qknorm_hd128"])
def test_lazy_module_runs_only_where_its_draft_may_be_used(name):
    """state[M_LAZY]: after a step whose next one drafts with the lookup the module's ops
    skip (M_W 0, counters released); after one left one position they run over the kept
    positions since its K/V ended, at most T (older ones stale), on their code paths of that
    width. Its K/V of the positions it ran over equals the host's fill_module_kv over the same
    positions (from the same kept hidden states); kernel buffers equal the VM's, tokens plain
    greedy's."""
    n = 26
    h, msd = _harness(name, lazy=True, n=n)
    b = h.bufs.clone()
    module = M.build_module(h.cfg, msd, 0, "cpu", torch.float32)
    vm, L = h.vm(), h.cfg.num_layers
    hk, hv = h.cache.k[L].clone(), h.cache.v[L].clone()  # the host's copy of the module's K/V
    skipped = wide = gaps = 0
    kv = int(h.bufs.state[W.M_KV])
    ran = torch.zeros(MAX_LEN, dtype=torch.bool)  # positions its ops wrote (a K/V row depends
    ran[:kv] = True  # on its position's inputs alone; the fill wrote the prompt's)
    for _ in range(n):
        vm.run(1)
        st = h.bufs.state
        if int(st[W.DONE]):
            break
        mw, mpos = int(st[W.M_W]), int(st[W.M_POS])
        if mw == 0:
            skipped += 1
            assert int(st[W.STEP_ONE]) != 1 and int(st[W.M_KV]) == kv
            continue
        gaps += mpos > kv  # a backlog past T: positions kv .. mpos - 1 keep what they held
        wide += mw > 1
        kv = int(st[W.M_KV])
        assert kv == int(st[W.POS]) == mpos + mw and 1 <= mw <= T
        M.fill_module_kv(h.cfg, module, h.w.embed, h.w.cos, h.w.sin, hk, hv, h.cache.hidden,
                         REPEAT + h.tokens(), mpos, kv)
        ran[mpos:kv] = True
        torch.testing.assert_close(h.cache.k[L][:, ran], hk[:, ran], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(h.cache.v[L][:, ran], hv[:, ran], rtol=1e-4, atol=1e-4)
    assert skipped > 0 and wide > 0 and gaps > 0 and int(h.bufs.state[W.M_STEPS]) > 0
    mk = Monokernel(h.plan, h.w)
    mk.launch(b, n)
    mk.check(b)
    assert compare(h.bufs, b, skip=("ctr",)) is None, compare(h.bufs, b, skip=("ctr",))
    assert h.tokens(b) == h.tokens() == h.reference_greedy(REPEAT, n)[0]


@interpreted
def test_mtp_floor_keeps_unlikely_drafts_out():
    """A floor of 1 (the draft must be certain): no module draft is ever used; tokens as
    before."""
    h, _ = _harness("llama_gqa_tied_hd64", floor=1.0)
    h.vm().run(N)
    assert int(h.bufs.state[W.M_STEPS]) == 0 and int(h.bufs.state[W.M_USED]) == 0
    assert h.tokens() == h.reference_greedy(REPEAT, N)[0]


@gpu
@pytest.mark.parametrize("lazy", [False, True])
def test_gpu_kernel_mtp_equals_vm(lazy):
    """On a GPU: 264 programs, real waits across SMs (the module's ops after SAMPLE, the next
    step's wait on MTP_SAMPLE; lazy: its ops skipped or on the code paths of their own width),
    fp32: the VM's buffers, plain greedy tokens."""
    h, _ = _harness("qwen3_qknorm_hd128", device="cuda", programs=264, tiling=Tiling(),
                    lazy=lazy)
    b = h.bufs.clone()
    h.vm().run(N)
    mk = Monokernel(h.plan, h.w)
    mk.launch(b, N)
    torch.cuda.synchronize()
    mk.check(b)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.reference_greedy(REPEAT, N)[0]
    assert int(b.state[W.M_STEPS]) > 0


@interpreted
@pytest.mark.parametrize("name,start", [("llama_gqa_tied_hd64", 0), ("qwen3_qknorm_hd128", 5)])
def test_module_fill_equals_the_host_fill(name, start):
    """A fill plan (plan(fill=True), the module's ops alone, T positions a step) writes the
    module's K/V of a prompt's positions as the host's fill_module_kv does (from position
    `start` on, those before it already there); kernel buffers equal the VM's."""
    h, _ = _harness(name)
    L, n = h.cfg.num_layers, len(REPEAT)
    toks = REPEAT + [int(h.bufs.tokens[0])]  # (the harness's start filled [0, n) on the host)
    want_k, want_v = h.cache.k[L].clone(), h.cache.v[L].clone()
    h.cache.k[L, :, start:].zero_()
    h.cache.v[L, :, start:].zero_()
    fp = plan(h.cfg, 1, T, MAX_LEN, tiling=replace(FAST, narrow=2), mtp=True, fill=True)
    assert fp.fill and [o.opcode for o in fp.ops][0] == MTP_EH and fp.ops[-1].opcode == FILL_NEXT
    fb = W.alloc_buffers(fp, "cpu", torch.float32, h.cache.k, h.cache.v, hidden=h.cache.hidden)
    steps = W.start_fill(fb, toks, start, n)
    assert steps == -(-(n - start) // T)
    vb = fb.clone()  # (its own K/V copy: the VM's)
    mk = Monokernel(fp, h.w)
    mk.launch(fb, steps + 2)  # (it ends itself)
    mk.check(fb)
    VM(fp, h.w, [vb]).run(steps + 2)
    assert compare(vb, fb) is None, compare(vb, fb)
    assert int(fb.state[W.STEPS]) == steps and int(fb.state[W.DONE]) == 1
    torch.testing.assert_close(h.cache.k[L, :, :n], want_k[:, :n], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h.cache.v[L, :, :n], want_v[:, :n], rtol=1e-4, atol=1e-4)
