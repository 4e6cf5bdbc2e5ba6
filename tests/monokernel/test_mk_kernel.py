"""The persistent kernel (one program, CPU interpreter) against the VM, buffer by buffer, and
against the reference's greedy tokens; stops, cancel, bounded waits, the diff tool."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from mk_utils import PROMPT, V, gpu, harness, interpreted, run_both

from agentfast.engine.errors import RequestError
from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import compare, first_divergence, kernel_runner, vm_runner
from agentfast.kernels.monokernel.kernel import Monokernel, MonokernelError
from agentfast.kernels.monokernel.plan import Tiling
from agentfast.kernels.monokernel.sampling import philox_uniform

N = 7


def _decodes_as_vm_and_reference(h) -> None:
    """N greedy steps of the kernel: every buffer equals the VM's, the tokens the reference's."""
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N)
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
@pytest.mark.parametrize("name,T,drafts", [
    ("llama_gqa_tied_hd64", 1, None),
    ("qwen3_qknorm_hd128", 1, None),
    ("qwen3_qknorm_hd128", 4, "every_third_wrong"),
    ("llama_obias_hd64", 4, "perfect"),
    ("llama_obias_hd64", 1, None),  # O-proj's bias where OPROJ_M merges (T = 1)
    ("qwen2_bias_hd64", 1, None),
    ("mistral_window_hd64", 1, None),
])
def test_kernel_equals_vm_and_reference(name, T, drafts):
    h = harness(name, T=T)
    ref, _ = h.reference_greedy(PROMPT, N)
    d = {None: None, "perfect": ref,
         "every_third_wrong": [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)]}
    h.start(PROMPT, N, drafts=d[drafts])
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref
    assert int(b.state[W.DONE]) == W.DONE_LENGTH and int(b.host[W.H_DONE]) == W.DONE_LENGTH
    if drafts == "perfect":  # every step keeps all T positions, the first one included
        assert int(b.state[W.STEPS]) == -(-(N - 1) // T), int(b.state[W.STEPS])


@interpreted
@pytest.mark.parametrize("name", ["qwen3_qknorm_hd128", "mistral_window_hd64",
                                  "llama_gqa_tied_hd64"])
@pytest.mark.parametrize("splits,block,fold,loop,last", [
    (2, 8, True, True, False), (1, 4, True, True, False), (1, 4, True, False, False),
    (2, 8, False, True, False), (2, 8, True, True, True), (1, 4, True, True, True)])
def test_new_key_folded_into_its_block(name, splits, block, fold, loop, last):
    """Tiling.attn_fold (T = 1, the default): the new key and value join the cached keys
    instead of a separate online-softmax step: patched into the first block's registers (2
    splits of 8-key blocks: the new position is in its split's first block) or, in a later
    block, patched from registers too where the wait sits in the key-block loop
    (Tiling.attn_wait_loop, ops_attn.attn_run_one; 1 split of 4-key blocks: many blocks a
    chunk), else read back from the cache. Unfolded (attn_fold=False), its own step from
    registers first (attn_run). Tiling.attn_new_last (`last`, on the loop path): not patched
    in, its own step after the blocks (in the split whose chunk holds it: the first block of
    2 splits of 8 keys, the last of 1 split of 4-key blocks). Buffers equal the VM's, tokens
    the reference's."""
    from mk_utils import FAST

    h = harness(name, tiling=dataclasses.replace(FAST, attn_splits=splits, attn_block=block,
                                                 attn_fold=fold, attn_wait_loop=loop,
                                                 attn_new_last=last))
    assert h.plan.tiling.attn_fold == fold and h.plan.splits == splits
    assert h.plan.attn_wait_loop == (fold and loop)
    assert Monokernel(h.plan, h.w).consts["ANL"] == last
    _decodes_as_vm_and_reference(h)


@interpreted
@pytest.mark.parametrize("name", ["qwen3_qknorm_hd128", "llama_obias_hd64"])
@pytest.mark.parametrize("early", [True, False])
def test_norm_weights_before_or_after_the_wait(name, early):
    """Tiling.norm_early (default on): QKV's and gate/up's RMSNorm weights requested before
    their waits (held in registers across them), or loaded after x's sum of squares: buffers
    equal the VM's, tokens the reference's either way."""
    from mk_utils import FAST

    h = harness(name, tiling=dataclasses.replace(FAST, norm_early=early))
    assert Monokernel(h.plan, h.w).consts["NWE"] == early
    _decodes_as_vm_and_reference(h)


@interpreted
@pytest.mark.parametrize("hidden", [96, 192])
def test_residual_loaded_per_run_or_per_tile(hidden):
    """O-proj and down load a run's residual rows once, right after their wait, when the run
    has <= 128 rows (hidden 96, one program), else tile by tile (hidden 192)."""
    from dataclasses import replace

    from mk_utils import FAST, cfg

    from agentfast.kernels.monokernel.harness import Harness

    h = Harness.build(replace(cfg("llama_gqa_tied_hd64"), hidden_size=hidden), 1, 1, 48,
                      tiling=FAST)
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N)
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
@pytest.mark.parametrize("name,T,fma_t", [("qwen3_qknorm_hd128", 4, False),
                                         ("qwen2_bias_hd64", 3, True),
                                         ("llama_obias_hd64", 2, True)])
def test_t_step_matvec_paths_equal_vm(name, T, fma_t):
    """T > 1 matvecs on whole-row FMA tiles (Tiling.fma_t, T <= fma_t_max: ops_mv.mv_tiles_t;
    T = 3 pads to 4 positions; QKV and O-proj biases) or on tl.dot tiles of 16 rows: buffers
    equal the VM's, tokens the reference's, with drafts that are partly wrong."""
    from mk_utils import FAST

    from agentfast.kernels.monokernel import plan as P

    h = harness(name, T=T, tiling=dataclasses.replace(FAST, fma_t=fma_t))
    assert h.plan.fma_t == ({P.QKV, P.OPROJ, P.GATEUP, P.DOWN} if fma_t else set())
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N, drafts=[(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)])
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
@pytest.mark.parametrize("T,merge_heads", [(8, None), (8, True), (2, True), (1, None)])
def test_split_merge_head_by_head_equals_vm(T, merge_heads):
    """16 KV splits of 4 keys, 4 query heads per kv head: the merge of a kv head's partials is
    too big for one round of loads (GP x SP x TP2 x HD > 8192) and goes head by head, split by
    split; with Tiling.merge_heads, head by head with every split at once, 4 positions per
    round (T = 8: two rounds per head; T = 2: one). T = 1 (32 splits) takes that path by
    default."""
    from dataclasses import replace

    from mk_utils import FAST

    sp = 32 if T == 1 else 16
    h = harness("qwen3_qknorm_hd128", T=T, tiling=replace(FAST, attn_splits=sp, attn_block=4,
                                                          merge_heads=merge_heads))
    assert h.plan.splits == sp and h.plan.merge_heads == (T == 1 if merge_heads is None
                                                          else merge_heads)
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N, drafts=[(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)])
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
@pytest.mark.parametrize("name,T,splits,b0,mr", [("qwen3_qknorm_hd128", 4, 1, 16, 8192),
                                                 ("llama_gqa_tied_hd64", 8, 2, 16, 16384),
                                                 ("qwen3_qknorm_hd128", 8, 4, 0, 2048)])
def test_t_step_first_block_and_merge_round_equal_vm(name, T, splits, b0, mr):
    """Tiling.attn_block_t0: a T-step split's first block of b0 keys (held across the wait),
    then 4-key blocks through the loop (1 split: the loop runs once the context passes 16
    keys; 2 splits: the first block holds the whole chunk); Tiling.merge_elems: the one-round
    merge limit (16384: the whole group at T = 8 in one round; 2048: head by head, split by
    split). Buffers equal the VM's, tokens the reference's, with drafts that are partly
    wrong."""
    from dataclasses import replace

    from mk_utils import FAST

    h = harness(name, T=T, tiling=replace(FAST, attn_splits=splits, attn_block=4,
                                          attn_block_t0=b0, merge_elems=mr))
    consts = Monokernel(h.plan, h.w).consts
    assert (consts["BT0"], consts["MR"]) == (b0, mr)
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N, drafts=[(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)])
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
def test_t_step_attends_on_its_first_tiles_equals_vm():
    """A T = 4 plan with 8 ATTN tiles per kv head and 2 splits in its steps (Plan.split_ratio
    4, as the default plans of T > 1 have 32 tiles and 8 splits): the tiles past the splits
    do nothing; buffers equal the VM's, tokens the reference's, with drafts that are partly
    wrong."""
    from dataclasses import replace

    from mk_utils import FAST

    h = harness("qwen3_qknorm_hd128", T=4, tiling=replace(FAST, attn_splits=8, attn_splits_t=2,
                                                          attn_block=4))
    assert (h.plan.splits, h.plan.t_splits, h.plan.split_ratio) == (8, 2, 4)
    ref, _ = h.reference_greedy(PROMPT, N)
    h.start(PROMPT, N, drafts=[(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)])
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref


@interpreted
@pytest.mark.parametrize("params", [dict(temperature=0.8),
                                    dict(temperature=0.6, top_k=10, top_p=0.9)])
def test_kernel_sampling_equals_vm(params):
    h = harness("llama_gqa_tied_hd64", tiling=Tiling(bn=64, bn_lm=64, attn_splits=2,
                                                     attn_block=16, cand=32))
    h.start(PROMPT, 5, seed=3, **params)
    b = run_both(h, 5, sampling=True)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert len(h.tokens(b)) == 5 and h.tokens(b) == h.tokens()


@interpreted
def test_kernel_stops_on_stop_id_and_cancel():
    """Stop ids and the host's cancel flag end the sequence; the host ring's progress and the
    reason reach the host."""
    h = harness("llama_gqa_tied_hd64")
    ref, _ = h.reference_greedy(PROMPT, N)
    stop = next(t for t in ref[2:] if t not in ref[:2])
    h.start(PROMPT, N, stop_ids=(stop, 999))
    b = run_both(h, N)
    assert h.tokens(b) == ref[: ref.index(stop) + 1]
    assert int(b.state[W.DONE]) == W.DONE_STOP and int(b.host[W.H_DONE]) == W.DONE_STOP
    assert int(b.host[W.H_PROGRESS]) == ref.index(stop) + 1
    h.start(PROMPT, N)
    h.bufs.host[W.H_CANCEL] = 1  # read once per step: the first step still runs
    b = run_both(h, N)
    assert h.tokens(b) == ref[:2] and int(b.host[W.H_DONE]) == W.DONE_CANCEL


@interpreted
@pytest.mark.parametrize("qkv_ll", [False, True])
def test_unsatisfiable_wait_names_the_op(qkv_ll):
    """A 2-program plan run by one program: the first op program 1 should have helped with
    never completes; the bounded wait records it and the host error names the op. With
    Tiling.qkv_ll attention polls QKV's tagged words instead of its counter: the error names
    both ops and the tag (step, layer) it waited for."""
    from mk_utils import FAST

    h = harness("llama_gqa_tied_hd64", programs=2,
                tiling=dataclasses.replace(FAST, qkv_ll=qkv_ll))
    assert h.plan.qkv_ll == qkv_ll
    h.start(PROMPT, N)
    one = dataclasses.replace(h.plan, num_programs=1)
    mk = Monokernel(one, h.w)
    mk.offs = mk.offs[:2].clone()  # program 0's instructions only
    mk.launch(h.bufs, 2, spin_cap=20)
    code, rec, seq, wseq, target, seen = h.bufs.err.tolist()[:6]
    assert code == (W.ERR_LL if qkv_ll else W.ERR_WAIT)
    op, dep = h.plan.ops[seq].name, h.plan.ops[wseq].name
    if qkv_ll:  # step 0, layer 0: tag 1; program 1's words were never written (0)
        assert (target, seen) == (1, 0)
        pattern = f"in {re.escape(op)}.*outputs of {re.escape(dep)} tagged 1 .step 0, layer 0"
    else:
        pattern = f"before {re.escape(op)}.*counter of {re.escape(dep)}"
    with pytest.raises(MonokernelError, match=pattern) as e:
        mk.check(h.bufs)
    # program 0 did half of layer 0's QKV rows; its ATTN run waits for all of them
    assert "layer 0 ATTN (op 1)" in str(e.value) and "layer 0 QKV (op 0)" in str(e.value)
    if not qkv_ll:
        assert "saw 4" in str(e.value)


@interpreted
def test_qkv_counter_path_equals_vm():
    """QKV's counter instead of its tagged words (Tiling.qkv_ll=False: the T > 1 kernels'
    hand-over) decodes what the VM and the reference do at T = 1 too."""
    from mk_utils import FAST

    h = harness("qwen3_qknorm_hd128", tiling=dataclasses.replace(FAST, qkv_ll=False))
    assert not h.plan.qkv_ll and not Monokernel(h.plan, h.w).consts["QLL"]
    _decodes_as_vm_and_reference(h)


@interpreted
def test_qkv_words_carry_the_values_and_last_tag():
    """Tiling.qkv_ll (on by default at T = 1): after a launch, QKV's tagged words hold the
    last step's last layer's q, k and v bit for bit (low half) and its tag, step x (layers + 1)
    + layer + 1 (high half); the T = 4 kernel has them off."""
    h = harness("qwen3_qknorm_hd128")
    assert h.plan.qkv_ll
    h.start(PROMPT, N)
    b = run_both(h, N)
    words = b.qkv_ll[0]
    assert torch.equal((words & 0xFFFFFFFF).to(torch.int32).view(torch.float32), b.qkv[0])
    steps, nl = int(b.state[W.STEPS]), h.plan.cfg.num_layers
    assert set((words >> 32).tolist()) == {(steps - 1) * (nl + 1) + nl}
    assert not harness("qwen3_qknorm_hd128", T=4).plan.qkv_ll
    with pytest.raises(ValueError, match="qkv_ll"):
        _ = harness("qwen3_qknorm_hd128", T=4, tiling=Tiling(qkv_ll=True)).plan.qkv_ll


@interpreted
def test_top_p_over_cap_raises():
    h = harness("llama_gqa_tied_hd64")
    with torch.no_grad():
        h.w.lm_head.zero_()  # flat logits: any 0.9 nucleus holds 231 of 256 tokens
    W.start_sequence(h.bufs, h.w, token=1, pos=len(PROMPT), max_new=N, stop_ids=[],
                     capacity=48, mode=W.FILTERED, temperature=1.0, top_p=0.9)
    mk = Monokernel(h.plan, h.w)
    mk.launch(h.bufs, 3, sampling=True)
    assert int(h.bufs.state[W.DONE]) == W.DONE_ERROR
    with pytest.raises(RequestError, match="candidates"):
        mk.check(h.bufs)


@interpreted
def test_philox_matches_tl_rand():
    import triton
    import triton.language as tl

    @triton.jit
    def draw(out, key_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(out + i, tl.rand(tl.load(key_ptr), i * 7919))

    out = torch.empty(64)
    for key in (0, 12345, (1 << 40) + 17):
        draw[(1,)](out, torch.tensor([key]), N=64)
        assert torch.equal(out, philox_uniform(key, torch.arange(64) * 7919))


@interpreted
def test_diff_finds_nothing_then_the_broken_op():
    h = harness("llama_gqa_tied_hd64")
    h.start(PROMPT, N)
    assert first_divergence(h.plan, h.bufs, vm_runner(h.w), kernel_runner(h.w), steps=2) is None
    broken = dataclasses.replace(h.w, w_o=h.w.w_o.clone())
    broken.w_o[1, 5, 3] += 0.5
    d = first_divergence(h.plan, h.bufs, vm_runner(h.w), vm_runner(broken), steps=2)
    where = "part" if h.plan.oproj_merge else "x"  # (O-proj's sum waits in part, T = 1)
    assert d is not None and d.buffer == where and d.op.startswith("layer 1 OPROJ"), d


@gpu
@pytest.mark.parametrize("dtype,T", [(torch.float32, 1), (torch.bfloat16, 1),
                                     (torch.float32, 4), (torch.bfloat16, 4),
                                     (torch.float32, 8)])
def test_gpu_kernel_equals_vm(dtype, T):
    """On a GPU: many programs, real waits across SMs; T = 4 (FMA sub-tiles of the T = 1
    records) and T = 8 (tl.dot tiles over them) with drafts of which every third is wrong.
    (T = 8 in bf16 differs from the VM in an LM tile's argmax on this random model: a
    rounding near-tie of the 16-position dot against fp32 torch; fp32 checks the logic.)"""
    torch.manual_seed(0)
    from mk_utils import cfg

    from agentfast.kernels.monokernel.harness import Harness

    h = Harness.build(cfg("qwen3_qknorm_hd128"), 264, T, 64, device="cuda", dtype=dtype)
    ref, _ = h.reference_greedy(PROMPT, N)
    drafts = [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)] if T > 1 else None
    h.start(PROMPT, N, drafts=drafts)
    b = run_both(h, N)
    torch.cuda.synchronize()
    assert compare(h.bufs, b, tol=1e-4 if dtype == torch.float32 else 3e-2) is None
    if dtype == torch.float32:
        assert h.tokens(b) == ref


def test_tune_relaxed_variant_reaches_the_kernel():
    """tune's relaxed=1 (timing only: every release without its fence) parses, misspelled knobs
    do not, and it becomes the kernel's RELAXED constant, off by default."""
    from agentfast.kernels.monokernel.tune import parse_variant

    assert parse_variant("relaxed=1,red=1") == {"relaxed": 1, "red": 1}
    with pytest.raises(SystemExit, match="unknown variant keys"):
        parse_variant("relax=1")
    assert parse_variant("relaxed=4098") == {"relaxed": 4098}
    h = harness("llama_gqa_tied_hd64")
    assert Monokernel(h.plan, h.w).consts["RELAXED"] == 0
    assert Monokernel(h.plan, h.w, relaxed_release=True).consts["RELAXED"] == 8191
    assert Monokernel(h.plan, h.w, relaxed_release=1).consts["RELAXED"] == 8191
    # a mask of opcodes (bit op): QKV's and OPROJ_M's releases unfenced, the others fenced
    assert Monokernel(h.plan, h.w, relaxed_release=4098).consts["RELAXED"] == 4098
    with pytest.raises(ValueError, match="mask of"):
        Monokernel(h.plan, h.w, relaxed_release=3)  # bit 0 is NOP: not a mask anyone meant
    with pytest.raises(ValueError, match="mask of"):
        Monokernel(h.plan, h.w, relaxed_release=1 << 13)


@interpreted
def test_relaxed_release_changes_only_ordering():
    """With one program (nothing runs concurrently) the relaxed builds (every op, and a mask:
    QKV's and DOWN's releases only) decode what the release build does: the constant switches
    the release's fence, nothing else."""
    from agentfast.kernels.monokernel.plan import DOWN, QKV

    h = harness("llama_gqa_tied_hd64")
    ref, _ = h.reference_greedy(PROMPT, N)
    for relaxed in (True, (1 << QKV) | (1 << DOWN)):
        h.start(PROMPT, N)
        b = h.bufs.clone()
        mk = Monokernel(h.plan, h.w, relaxed_release=relaxed)
        mk.launch(b, N)
        mk.check(b)
        assert h.tokens(b) == ref, relaxed
