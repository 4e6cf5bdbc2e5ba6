"""The persistent monokernel and its launcher.

grid = num_programs; each program walks its instruction records (plan.py) for up to `nsteps`
steps. Per step it first waits for the previous step's last op (SAMPLE, or with an MTP module
MTP_SAMPLE) and stops when the sequence is done (in a kernel of T > 1 positions it also reads
state[STEP_ONE]: 1 runs the step as one position, every op on its T = 1 code path over the same
records, 2 on the narrow steps' paths of Tiling.narrow positions: per-step switching); the
module's ops (plan(mtp=True), MTP: its layer is layer NL, on rows T.. of x) follow SAMPLE in the
same step over the positions SAMPLE chose (state[M_POS], [M_W]: each program's first module op
waits for SAMPLE and reads them; M_W 0: the module's ops release their counters at once), on
the code paths of that width, and a fill plan (plan(fill=True)) runs them alone over the
step's positions, ending each step with FILL_NEXT; per
record it requests what the op reads that no other op of the step writes (weights, cached
keys), waits for the producer op's counter (bounded), runs the op (ops_mv, ops_attn,
ops_sample) and releases its own counter (in T = 1 kernels attention polls QKV's outputs
themselves, as words tagged by step and layer, and QKV's counter goes without the fence:
Tiling.qkv_ll) (a record that does nothing in the step, as OPROJ
in a one-position step where OPROJ_M merged, adds to it without the release's fence:
sync.release_idle; with Tiling.kind_tables each step kind walks its own records, those idle in it
dropped but one per op that adds their count: Plan.kind_programs). Counters past the ops'
(plan.ticket_base) are the
attention merge tickets (unused where OPROJ_M merges: Plan.oproj_merge, a T = 1 kernel's steps,
a T > 1 kernel's one-position steps and with Plan.narrow_merge its narrow steps, `part` then
zeroed per launch too). Counters
are zeroed per launch by the
host, so epochs restart at 1. With one program (the CPU interpreter runs programs one after
another) every wait is satisfied by the program itself. Only ranks == 1 runs here (ALLREDUCE
is an error). Knows nothing about sessions. (Requesting the next run's weights into L2 with
`prefetch.global.L2` before the wait was measured slower on an H200 than no prefetch, at 64K
to 1M elements and at 2 to 8 chunks ahead: BENCH.md.)
"""

from __future__ import annotations

import math
import os
import warnings

import torch
import triton
import triton.language as tl

from agentfast.engine.errors import AgentfastError, RequestError

from . import plan as P
from . import weights as W
from .ops_attn import attn_run, attn_run_one, oproj_merge_run
from .ops_mv import eh_run, gateup_run, proj_run, qkv_run
from .ops_sample import _positions, fill_next, lm_run, mtp_head_run, mtp_sample_run, sample_run
from .sync import NSTAMP, release, release_idle, stamp, wait

RECORD = tl.constexpr(P.RECORD)
QKV = tl.constexpr(P.QKV)
ATTN = tl.constexpr(P.ATTN)
OPROJ = tl.constexpr(P.OPROJ)
OPROJ_M = tl.constexpr(P.OPROJ_M)
GATEUP = tl.constexpr(P.GATEUP)
DOWN = tl.constexpr(P.DOWN)
LMHEAD = tl.constexpr(P.LMHEAD)
SAMPLE = tl.constexpr(P.SAMPLE)
ALLREDUCE = tl.constexpr(P.ALLREDUCE)
NOP = tl.constexpr(P.NOP)
MTP_EH = tl.constexpr(P.MTP_EH)
MTP_SAMPLE = tl.constexpr(P.MTP_SAMPLE)
FILL_NEXT = tl.constexpr(P.FILL_NEXT)
POS = tl.constexpr(W.POS)
STEP_ONE = tl.constexpr(W.STEP_ONE)
DONE = tl.constexpr(W.DONE)
H_CANCEL = tl.constexpr(W.H_CANCEL)
ERR_OPCODE = tl.constexpr(W.ERR_OPCODE)
M_POS = tl.constexpr(W.M_POS)
M_W = tl.constexpr(W.M_W)
LOG2E = 1.4426950408889634
DEFAULT_SPIN_CAP = 1 << 22  # polls (an L2 round trip + 20 ns sleep each): seconds, not a hang


def relaxed_mask(relaxed: bool | int) -> int:
    """Monokernel's relaxed_release as the kernel's RELAXED mask (bit `op`: that opcode's
    releases unfenced): False / 0 none, True / 1 every opcode, another int the mask itself."""
    if relaxed is True or relaxed == 1:
        return (1 << len(P.OP_NAMES)) - 1
    if not 0 <= int(relaxed) < 1 << len(P.OP_NAMES) or int(relaxed) & 1:
        raise ValueError(f"relaxed_release {relaxed!r}: a bool or a mask of (1 << opcode), "
                         f"opcodes {P.OP_NAMES}")
    return int(relaxed)


class MonokernelError(AgentfastError):
    """The kernel stopped on an error it recorded (a wait that never completed)."""


@triton.jit(do_not_specialize=["nsteps", "spin_cap", "kv_cap", "window", "skip", "trace_step",
                                "trace_rows"])
def _monokernel(
    instr, offs, ctr, err, state, fparams, tokens, stop_ids, drafts, host, hist, hidden,
    x, qkv, qkv_ll, att_acc, att_ml, attn, part, act, logits, lm_val, lm_idx, lm_stat, cand, m_stat,
    c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next, c_done, c_forced,
    w_qkv, b_qkv, attn_norm, q_norm, k_norm, w_o, b_o, mlp_norm, w_gu, w_down, norm_f, embed,
    lm_head, w_eh, enorm, hnorm, mtp_norm, cos, sin, k_cache, v_cache, nsteps, spin_cap, eps,
    qk_scale, kv_cap, window, skip, trace, trace_step, trace_rows,
    H: tl.constexpr, FF: tl.constexpr, V: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr,
    HD: tl.constexpr, T: tl.constexpr, TP: tl.constexpr, TP2: tl.constexpr, M: tl.constexpr,
    S: tl.constexpr, SP: tl.constexpr, SR: tl.constexpr, SPT: tl.constexpr, NSA: tl.constexpr,
    BT: tl.constexpr, TN: tl.constexpr,
    TK: tl.constexpr, FT_QKV: tl.constexpr, FT_O: tl.constexpr, FT_GU: tl.constexpr,
    FT_DN: tl.constexpr,
    BN_QKV: tl.constexpr, BK_QKV: tl.constexpr,
    BN_O: tl.constexpr, BK_O: tl.constexpr, BN_GU: tl.constexpr, BK_GU: tl.constexpr,
    BN_DN: tl.constexpr, BK_DN: tl.constexpr, BN_LM: tl.constexpr, BK_LM: tl.constexpr,
    BN_QKV_T: tl.constexpr, BK_QKV_T: tl.constexpr, BN_O_T: tl.constexpr, BK_O_T: tl.constexpr,
    BN_GU_T: tl.constexpr, BK_GU_T: tl.constexpr, BN_DN_T: tl.constexpr, BK_DN_T: tl.constexpr,
    NS_QKV_T: tl.constexpr, NS_O_T: tl.constexpr, NS_GU_T: tl.constexpr, NS_DN_T: tl.constexpr,
    RED: tl.constexpr, NS_QKV: tl.constexpr, NS_O: tl.constexpr, NS_GU: tl.constexpr,
    NS_DN: tl.constexpr, NS_LM: tl.constexpr, NT: tl.constexpr,
    NCL: tl.constexpr, C: tl.constexpr, END_SEQ: tl.constexpr, MTP: tl.constexpr,
    MSEQ: tl.constexpr,
    NL: tl.constexpr, BN_EH: tl.constexpr, BK_EH: tl.constexpr, NS_EH: tl.constexpr,
    HAS_QKV_BIAS: tl.constexpr, HAS_O_BIAS: tl.constexpr, QK_NORM: tl.constexpr,
    HAS_WINDOW: tl.constexpr, SAMPLING: tl.constexpr, USE_PTX: tl.constexpr, AFOLD: tl.constexpr,
    AMH: tl.constexpr, M1: tl.constexpr, BT1: tl.constexpr, BT0: tl.constexpr, MR: tl.constexpr,
    TB: tl.constexpr, TP2B: tl.constexpr, MB: tl.constexpr, TNB: tl.constexpr, BT0B: tl.constexpr,
    FN_QKV: tl.constexpr, FN_O: tl.constexpr, FN_GU: tl.constexpr, FN_DN: tl.constexpr,
    BN_QKV_N: tl.constexpr, BK_QKV_N: tl.constexpr, BN_O_N: tl.constexpr, BK_O_N: tl.constexpr,
    BN_GU_N: tl.constexpr, BK_GU_N: tl.constexpr, BN_DN_N: tl.constexpr, BK_DN_N: tl.constexpr,
    NS_QKV_N: tl.constexpr, NS_O_N: tl.constexpr, NS_GU_N: tl.constexpr, NS_DN_N: tl.constexpr,
    OM: tl.constexpr, OM0: tl.constexpr, BN_OM: tl.constexpr, BK_OM: tl.constexpr,
    NS_OM: tl.constexpr, IEEE: tl.constexpr, NW: tl.constexpr, TRACE: tl.constexpr,
    KT: tl.constexpr, NM: tl.constexpr, ALW: tl.constexpr, RELAXED: tl.constexpr,
    QLL: tl.constexpr, ANL: tl.constexpr, NSA1: tl.constexpr, NWE: tl.constexpr,
):
    Q: tl.constexpr = NH * HD
    NQKV: tl.constexpr = Q + 2 * NKV * HD
    TOP: tl.constexpr = FILL_NEXT if MTP else SAMPLE  # the largest opcode this kernel runs
    pid = tl.program_id(0)
    i0 = tl.load(offs + pid)
    i1 = tl.load(offs + pid + 1)
    step = 0
    go = 1
    while (step < nsteps) & (go == 1):
        # the previous step's SAMPLE decided whether this step runs (same answer everywhere;
        # with an MTP module its MTP_SAMPLE, the step's last op, may have changed its width)
        go = wait(ctr + END_SEQ, step, err, spin_cap, -1, END_SEQ, END_SEQ, pid, step,
                  NW, USE_PTX)
        pos = tl.load(state + POS, cache_modifier=".cg")  # fixed for the step
        one = 0  # this step of a T > 1 kernel (STEP_ONE): 1 one position (T = 1 paths), 2 TB
        # positions (the narrow paths, Tiling.narrow), 0 all T
        if T > 1:
            one = tl.load(state + STEP_ONE, cache_modifier=".cg")
        width = 1  # the step's positions (MTP_EH)
        if T > 1:
            width = _positions(one, TB, T)
        if KT > 0:  # the step kind's own records (Plan.kinds): one position, then the others
            # (KT 2), or narrow and wide each (KT 3, Plan.narrow_merge)
            if KT == 3:
                kb = tl.where(one == 1, 0, tl.where(one == 2, 1, 2)) * (tl.num_programs(0) + 1)
            else:
                kb = (one != 1).to(tl.int32) * (tl.num_programs(0) + 1)
            i0 = tl.load(offs + kb + pid)
            i1 = tl.load(offs + kb + pid + 1)
        if go == 1:
            go = (tl.load(state + DONE, cache_modifier=".cg") == 0).to(tl.int32)
        epoch = step + 1
        mhave = 0  # the MTP module's positions read (once per step and program: M_W, M_POS)
        mw = 0
        mp = pos
        mok = 1
        i = i0
        while (i < i1) & (go == 1):
            if TRACE:  # timeline (tune.py): start, wait ended, phase marks, released
                tracing = (step == trace_step).to(tl.int32)
                slot = trace + (pid * trace_rows + i - i0).to(tl.int64) * NSTAMP
                stamp(slot, tracing, USE_PTX)
            rec = instr + i * RECORD
            op = tl.load(rec)
            seq = tl.load(rec + 1)
            layer = tl.load(rec + 2)
            a = tl.load(rec + 3)
            b = tl.load(rec + 4)
            aux = tl.load(rec + 7)
            wseq = tl.load(rec + 8)
            lltag = step * (NL + 1) + layer + 1  # this layer's QKV words (Tiling.qkv_ll)
            xl = x  # the rows of x this op's layer reads and writes (the MTP module: its own)
            if MTP:
                xl = x + (layer == NL).to(tl.int32) * (T * H)
            p = pos  # the op's positions: the step's, or the MTP module's (M_POS, M_W)
            oc = one
            wd = width
            mskip = 0
            if MSEQ >= 0:  # noqa: SIM102 (a decode plan with the module: constexpr, runtime)
                if layer == NL:  # a module op: SAMPLE chose its positions (M_W 0: none),
                    # read by the program's first module op of the step (the others reuse
                    # them: no dependent round trip before their weights are requested)
                    if mhave == 0:
                        mok = wait(ctr + MSEQ, epoch, err, spin_cap, i, seq, MSEQ, pid, step,
                                   NW, USE_PTX)
                        mw = tl.load(state + M_W, cache_modifier=".cg")
                        mp = tl.load(state + M_POS, cache_modifier=".cg")
                        mhave = 1
                    p = mp
                    if T > 1:  # the code path of that width; its rows past M_W are padding
                        oc = tl.where(mw <= 1, 1, tl.where(mw <= TB, 2, 0))
                        wd = _positions(oc, TB, T)
                    mskip = ((mw == 0) | (mok == 0)).to(tl.int32)
            cancel = 0
            if op == SAMPLE:  # host memory: read before the wait, off the critical path
                cancel = tl.load(host + H_CANCEL, volatile=True)
            target = (epoch + tl.load(rec + 10)) * tl.load(rec + 9)
            if OM and (T > 1):  # OPROJ_M runs in one-position steps (and with NM in the
                # narrow ones), OPROJ in the others
                om_step = oc == 1
                if NM:
                    om_step = (oc == 1) | (oc == 2)
                if (op == GATEUP) & om_step:  # waits for OPROJ_M
                    wseq = tl.load(rec + 5)
                    target = epoch * tl.load(rec + 6)
                if (op == OPROJ) & (om_step == 0):  # waits for ATTN (OPROJ_M released at once)
                    wseq = wseq - 1
                    target = epoch * (NKV * S)
            run = (((skip >> op) & 1) == 0).to(tl.int32)  # skip: timing variants (tune.py)
            if TRACE:
                sy = (ctr + wseq, target, err, spin_cap, i, seq, wseq, pid, step, run, slot,
                      tracing)
            else:  # a constant 0: the stamps in the ops compile away
                sy = (ctr + wseq, target, err, spin_cap, i, seq, wseq, pid, step, run, trace, 0)
            # matvec ops request their first weights and ATTN its first cached keys, then they
            # wait (ops_mv, ops_attn); SAMPLE waits here
            ok = 0
            idle = 0  # 1: released without a fence (the record does nothing in this step, or
            # no one waits on its counter)
            if mskip == 1:  # a module op on a step without it: its counter released at once
                ok = mok
                idle = 1
            elif op == QKV:
                if T > 1:  # noqa: SIM102 (constexpr, then runtime)
                    if oc == 1:
                        ok = qkv_run(layer, a, b, xl, qkv, w_qkv, b_qkv, attn_norm, eps, sy, H,
                                     NQKV, 1, 1, BN_QKV, BK_QKV, HAS_QKV_BIAS, IEEE, RED, NS_QKV,
                                     NW, USE_PTX, False, 1, NWE=NWE)
                if TB > 1:  # noqa: SIM102 (constexpr, then runtime)
                    if oc == 2:
                        ok = qkv_run(layer, a, b, xl, qkv, w_qkv, b_qkv, attn_norm, eps, sy, H,
                                     NQKV, TB, TP, BN_QKV_N, BK_QKV_N, HAS_QKV_BIAS, IEEE, RED,
                                     NS_QKV_N, NW, USE_PTX, FN_QKV, TP2B)
                if QLL:  # (T = 1) q, k, v also as tagged words, which attention polls: the
                    # counter is added without a fence (no one waits on it)
                    ok = qkv_run(layer, a, b, xl, qkv, w_qkv, b_qkv, attn_norm, eps, sy, H, NQKV,
                                 1, 1, BN_QKV, BK_QKV, HAS_QKV_BIAS, IEEE, RED, NS_QKV, NW,
                                 USE_PTX, False, 1, qkv_ll, lltag, True, NWE)
                    idle = 1
                elif oc == 0:
                    ok = qkv_run(layer, a, b, xl, qkv, w_qkv, b_qkv, attn_norm, eps, sy, H, NQKV,
                                 T, TP, BN_QKV_T, BK_QKV_T, HAS_QKV_BIAS, IEEE, RED, NS_QKV_T,
                                 NW, USE_PTX, FT_QKV, TP2)
            elif op == OPROJ_M:  # one-position steps: the attention splits merged here
                if OM:
                    if (T == 1) | (oc == 1):
                        ok = oproj_merge_run(layer, a, b, tl.load(rec + 5), p, window, att_acc,
                                             att_ml, attn, part, w_o, b_o, sy, H, NH, NKV, HD,
                                             S, SP, BT1, BN_OM, BK_OM, HAS_O_BIAS, HAS_WINDOW,
                                             NS_OM, NW, USE_PTX, T)
                    else:  # (OPROJ runs, waiting for ATTN itself)
                        ok = 1
                        idle = 1
                        if NM:  # noqa: SIM102 (constexpr, then runtime)
                            if oc == 2:  # the narrow steps' splits (Plan.narrow_merge)
                                ok = oproj_merge_run(layer, a, b, tl.load(rec + 5), p, window,
                                                     att_acc, att_ml, attn, part, w_o, b_o, sy,
                                                     H, NH, NKV, HD, S, SPT, BT, BN_OM, BK_OM,
                                                     HAS_O_BIAS, HAS_WINDOW, NS_OM, NW, USE_PTX,
                                                     T, TB, TP2B, SR)
                                idle = 0
            elif op == OPROJ:
                if T > 1:  # noqa: SIM102
                    if oc == 1:
                        if OM:  # OPROJ_M ran: released at once
                            ok = 1
                            idle = 1
                        else:
                            ok = proj_run(layer, a, b, attn, xl, w_o, b_o, eps, sy, H, Q, 1, 1,
                                          BN_O, BK_O, HAS_O_BIAS, IEEE, RED, NS_O, NW, USE_PTX,
                                          False, 1)
                if TB > 1:  # noqa: SIM102
                    if oc == 2:
                        if NM:  # OPROJ_M ran: released at once
                            ok = 1
                            idle = 1
                        else:
                            ok = proj_run(layer, a, b, attn, xl, w_o, b_o, eps, sy, H, Q, TB,
                                          TP, BN_O_N, BK_O_N, HAS_O_BIAS, IEEE, RED, NS_O_N, NW,
                                          USE_PTX, FN_O, TP2B)
                if oc == 0:
                    ok = proj_run(layer, a, b, attn, xl, w_o, b_o, eps, sy, H, Q, T, TP, BN_O_T,
                                  BK_O_T, HAS_O_BIAS, IEEE, RED, NS_O_T, NW, USE_PTX, FT_O, TP2)
            elif op == GATEUP:
                if T > 1:  # noqa: SIM102
                    if oc == 1:
                        ok = gateup_run(layer, a, b, xl, act, w_gu, mlp_norm, eps, sy, H, FF, 1,
                                        1, BN_GU, BK_GU, IEEE, RED, NS_GU, NW, USE_PTX, False, 1,
                                        part, OM, NWE)
                if TB > 1:  # noqa: SIM102
                    if oc == 2:
                        ok = gateup_run(layer, a, b, xl, act, w_gu, mlp_norm, eps, sy, H, FF, TB,
                                        TP, BN_GU_N, BK_GU_N, IEEE, RED, NS_GU_N, NW, USE_PTX,
                                        FN_GU, TP2B, part, NM)
                if oc == 0:
                    ok = gateup_run(layer, a, b, xl, act, w_gu, mlp_norm, eps, sy, H, FF, T, TP,
                                    BN_GU_T, BK_GU_T, IEEE, RED, NS_GU_T, NW, USE_PTX, FT_GU,
                                    TP2, part, OM0, NWE)
            elif op == DOWN:
                if T > 1:  # noqa: SIM102
                    if oc == 1:
                        ok = proj_run(layer, a, b, act, xl, w_down, b_o, eps, sy, H, FF, 1, 1,
                                      BN_DN, BK_DN, False, IEEE, RED, NS_DN, NW, USE_PTX, False, 1,
                                      part, OM)
                if TB > 1:  # noqa: SIM102
                    if oc == 2:
                        ok = proj_run(layer, a, b, act, xl, w_down, b_o, eps, sy, H, FF, TB, TP,
                                      BN_DN_N, BK_DN_N, False, IEEE, RED, NS_DN_N, NW, USE_PTX,
                                      FN_DN, TP2B, part, NM)
                if oc == 0:
                    ok = proj_run(layer, a, b, act, xl, w_down, b_o, eps, sy, H, FF, T, TP,
                                  BN_DN_T, BK_DN_T, False, IEEE, RED, NS_DN_T, NW, USE_PTX, FT_DN,
                                  TP2, part, OM0)
            elif op == ATTN:
                if T > 1:  # noqa: SIM102
                    if oc == 1:
                        if ALW:
                            ok = attn_run_one(layer, a, b, p, qkv, att_acc, att_ml, attn, q_norm,
                                              k_norm, cos, sin, k_cache, v_cache, kv_cap, window,
                                              eps, qk_scale, sy, NH, NKV, HD, S, BT1, M1,
                                              QK_NORM, HAS_WINDOW, IEEE, NSA1, NW, USE_PTX, T,
                                              NEWLAST=ANL)
                        else:
                            ok = attn_run(layer, a, b, p, qkv, att_acc, att_ml, attn,
                                          ctr + TK + layer * NKV, q_norm, k_norm, cos, sin,
                                          k_cache, v_cache, kv_cap, window, eps, qk_scale, sy,
                                          NH, NKV, HD, 1, S, SP, BT1, M1, 1, 1, QK_NORM,
                                          HAS_WINDOW, IEEE, NSA, NW, USE_PTX, AFOLD, True, 1, T,
                                          0, MR, OM)
                if TB > 1:  # noqa: SIM102
                    if oc == 2:
                        ok = attn_run(layer, a, b, p, qkv, att_acc, att_ml, attn,
                                      ctr + TK + layer * NKV, q_norm, k_norm, cos, sin, k_cache,
                                      v_cache, kv_cap, window, eps, qk_scale, sy, NH, NKV, HD, TB,
                                      S, SPT, BT, MB, TP2B, TNB, QK_NORM, HAS_WINDOW, IEEE, NSA,
                                      NW, USE_PTX, AFOLD, AMH, SR, T, BT0B, MR, NM)
                if oc == 0:
                    if ALW and (T == 1):
                        ok = attn_run_one(layer, a, b, p, qkv, att_acc, att_ml, attn, q_norm,
                                          k_norm, cos, sin, k_cache, v_cache, kv_cap, window,
                                          eps, qk_scale, sy, NH, NKV, HD, S, BT, M, QK_NORM,
                                          HAS_WINDOW, IEEE, NSA1, NW, USE_PTX, 1, qkv_ll, lltag,
                                          QLL, ANL)
                    else:
                        ok = attn_run(layer, a, b, p, qkv, att_acc, att_ml, attn,
                                      ctr + TK + layer * NKV, q_norm, k_norm, cos, sin, k_cache,
                                      v_cache, kv_cap, window, eps, qk_scale, sy, NH, NKV, HD, T,
                                      S, SPT, BT, M, TP2, TN, QK_NORM, HAS_WINDOW, IEEE, NSA, NW,
                                      USE_PTX, AFOLD, AMH, SR, T, BT0, MR, OM0, qkv_ll, lltag,
                                      QLL)
            elif (op == LMHEAD) & (layer >= 0):  # the MTP module's head
                if MTP:
                    ok = mtp_head_run(a, b, p, x, logits, lm_val, lm_idx, m_stat, lm_head,
                                      mtp_norm, state, eps, sy, H, V, T, BN_LM, BK_LM, NT, IEEE,
                                      RED, NS_LM, NW, USE_PTX)
            elif op == MTP_EH:
                if MTP:
                    ok = eh_run(a, b, p, wd, x, hidden, hist, state, embed, w_eh, enorm,
                                hnorm, eps, sy, H, T, BN_EH, BK_EH, NS_EH, NW, USE_PTX)
            elif op == LMHEAD:
                if T > 1:  # noqa: SIM102
                    if oc == 1:
                        ok = lm_run(a, b, aux, x, logits, lm_val, lm_idx, lm_stat, cand, lm_head,
                                    norm_f, state, fparams, c_bitmask, eps, sy, H, V, 1, 1,
                                    BN_LM, BK_LM, NT, NCL, C, SAMPLING, IEEE, RED, NS_LM, NW,
                                    USE_PTX, T)
                if TB > 1:  # noqa: SIM102
                    if oc == 2:
                        ok = lm_run(a, b, aux, x, logits, lm_val, lm_idx, lm_stat, cand, lm_head,
                                    norm_f, state, fparams, c_bitmask, eps, sy, H, V, TB, TP,
                                    BN_LM, BK_LM, NT, NCL, C, SAMPLING, IEEE, RED, NS_LM, NW,
                                    USE_PTX, T)
                if oc == 0:
                    ok = lm_run(a, b, aux, x, logits, lm_val, lm_idx, lm_stat, cand, lm_head,
                                norm_f, state, fparams, c_bitmask, eps, sy, H, V, T, TP, BN_LM,
                                BK_LM, NT, NCL, C, SAMPLING, IEEE, RED, NS_LM, NW, USE_PTX, T)
            else:
                ok = wait(ctr + wseq, target, err, spin_cap, i, seq, wseq, pid, step, NW,
                          USE_PTX)
                if TRACE:
                    stamp(slot + 1, tracing, USE_PTX)
            if (ok == 1) & (run == 1):
                if op == SAMPLE:
                    sample_run(seq, cancel, one, state, fparams, tokens, stop_ids, drafts, host,
                               hist, hidden, x, embed, lm_val, lm_idx, lm_stat, cand, err,
                               c_bitmask, c_default, c_exc_ptr, c_exc_tokens, c_exc_next, c_done,
                               c_forced, H, V, T, TP2, NT, NCL, C, SAMPLING, TB, TP2B)
                elif op == MTP_SAMPLE:
                    if MTP:
                        mtp_sample_run(state, tokens, x, embed, lm_val, lm_idx, m_stat, H, T, NT,
                                       TB)
                    else:
                        tl.atomic_cas(err, 0, ERR_OPCODE)
                        ok = 0
                elif op == FILL_NEXT:
                    if MTP:
                        fill_next(state, pos, T)
                elif (op == NOP) | (op == ALLREDUCE) | ((op > TOP) & (op != OPROJ_M)):
                    # ALLREDUCE (ranks > 1), garbage: not here
                    tl.atomic_cas(err, 0, ERR_OPCODE)
                    ok = 0
            if ok == 1:
                if RELAXED == 0:
                    if idle == 1:
                        release_idle(ctr + seq, tl.load(rec + 11))
                    else:
                        release(ctr + seq, tl.load(rec + 11))
                else:  # timing only (Monokernel's relaxed_release): the ops in the mask unfenced
                    if (((RELAXED >> op) & 1) == 1) | (idle == 1):
                        release_idle(ctr + seq, tl.load(rec + 11))
                    else:
                        release(ctr + seq, tl.load(rec + 11))
                if TRACE:
                    stamp(slot + NSTAMP - 1, tracing, USE_PTX)
            go = ok
            i += 1
        step += 1


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


MV_OPS = ((P.QKV, "QKV"), (P.OPROJ, "O"), (P.GATEUP, "GU"), (P.DOWN, "DN"))  # constant names


def _mv_consts(suffix: str, blocks: dict, stages) -> dict:
    """BN_<op><suffix>, BK_<op><suffix> and NS_<op><suffix> of the matvec ops: their blocks
    and `stages(op)` (the T-steps' or the narrow steps' paths)."""
    out = {}
    for op, n in MV_OPS:
        out[f"BN_{n}{suffix}"], out[f"BK_{n}{suffix}"] = blocks[op]
        out[f"NS_{n}{suffix}"] = stages(op)
    return out


class Monokernel:
    """A plan bound to weights on one device: tables uploaded once, launched many times."""

    def __init__(self, plan: P.Plan, w: W.MonoWeights, num_warps: int = 4, num_stages: int = 1,
                 use_ptx: bool | None = None, maxnreg: int | None = None,
                 reduce_chunks: bool = False, relaxed_release: bool | int = False):
        assert plan.ranks == 1, "the kernel runs one rank; use the VM for ranks > 1"
        c, dev = plan.cfg, w.w_qkv.device
        assert c.head_dim in (16, 32, 64, 128, 256), f"head_dim {c.head_dim}"
        assert not plan.mtp or (w.has_mtp and w.w_qkv.shape[0] == c.num_layers + 1), (
            "an MTP plan needs weights with the module attached (weights.attach_mtp)")
        self.plan, self.w, self.num_warps, self.num_stages = plan, w, num_warps, num_stages
        # maxnreg caps registers/thread (CUDA) so more programs fit per SM; spills go to local
        # memory. reduce_chunks: T = 1 matvec chunks summed as they arrive ([BN] accumulators,
        # fewer registers). relaxed_release: every op's counter added without the release's
        # fence (timing only, tune's relaxed=1: what a flag-in-data hand-over could save at most;
        # the stores before the add are then unordered, so results may be wrong); an int other
        # than 0 / 1: a mask of opcodes (bit `op`) whose releases go unfenced, the others fenced
        self.opts = {"maxnreg": maxnreg} if maxnreg else {}
        self._fits: dict[bool, int] = {}
        self.fit_info: dict = {}  # registers, shared memory, programs per SM (CUDA, 1st launch)
        self._no_trace = torch.zeros(NSTAMP.value, dtype=torch.int64, device=dev)
        recs, offs = plan.table()
        self.instr = torch.from_numpy(recs).to(dev)
        self.offs = torch.from_numpy(offs).to(dev)
        if use_ptx is None:
            use_ptx = dev.type == "cuda" and not interpreting() and torch.version.hip is None
        g, tp2, bl = c.group_size, triton.next_power_of_2(plan.T), plan.blocks
        blt = plan.blocks_t or bl
        self.consts = dict(
            H=c.hidden_size, FF=c.intermediate_size, V=c.vocab_size, NH=c.num_heads,
            NKV=c.num_kv_heads, HD=c.head_dim, T=plan.T, TP=plan.TP, TP2=tp2,
            M=max(16, triton.next_power_of_2(g) * tp2), S=plan.splits,
            SP=triton.next_power_of_2(plan.splits), NSA=plan.tiling.attn_stages,
            NSA1=plan.stages_one,
            SR=plan.split_ratio, SPT=triton.next_power_of_2(plan.splits // plan.split_ratio),
            TN=1 if plan.T == 1 else max(16, tp2), TK=plan.ticket_base,
            BT=plan.tiling.attn_block,
            FT_QKV=P.QKV in plan.fma_t, FT_O=P.OPROJ in plan.fma_t,
            FT_GU=P.GATEUP in plan.fma_t, FT_DN=P.DOWN in plan.fma_t,
            BN_QKV=bl[P.QKV][0], BK_QKV=bl[P.QKV][1], BN_O=bl[P.OPROJ][0], BK_O=bl[P.OPROJ][1],
            BN_GU=bl[P.GATEUP][0], BK_GU=bl[P.GATEUP][1], BN_DN=bl[P.DOWN][0],
            BK_DN=bl[P.DOWN][1], BN_LM=bl[P.LMHEAD][0], BK_LM=bl[P.LMHEAD][1],
            RED=reduce_chunks, NS_QKV=plan.op_stages(P.QKV), NS_O=plan.op_stages(P.OPROJ),
            NS_GU=plan.op_stages(P.GATEUP), NS_DN=plan.op_stages(P.DOWN),
            NS_LM=plan.op_stages(P.LMHEAD), NW=num_warps, NT=plan.n_lm_tiles,
            **_mv_consts("_T", blt, lambda op: plan.op_stages(op, t_step=True)),
            NCL=max(1, plan.n_cand_lists), C=plan.tiling.cand, END_SEQ=plan.end_seq,
            MTP=plan.mtp, MSEQ=plan.sample_seq if plan.mtp and not plan.fill else -1,
            NL=c.num_layers,
            BN_EH=bl[P.MTP_EH][0] if plan.mtp else 1, BK_EH=bl[P.MTP_EH][1] if plan.mtp else 1,
            NS_EH=plan.op_stages(P.MTP_EH) if plan.mtp else 1,
            HAS_QKV_BIAS=w.b_qkv is not None,
            HAS_O_BIAS=w.b_o is not None, QK_NORM=w.q_norm is not None,
            HAS_WINDOW=bool(c.sliding_window), USE_PTX=use_ptx, AFOLD=plan.tiling.attn_fold,
            AMH=plan.merge_heads, M1=max(16, triton.next_power_of_2(g)),
            BT1=plan.block_one,
            BT0=plan.block_t0(), MR=plan.merge_round,
            **self._narrow_consts(plan), OM=plan.oproj_merge,
            OM0=plan.oproj_merge and plan.T == 1,
            BN_OM=bl.get(P.OPROJ_M, (1, 1))[0], BK_OM=bl.get(P.OPROJ_M, (1, 1))[1],
            NS_OM=plan.op_stages(P.OPROJ_M) if plan.oproj_merge else 1,
            IEEE=w.w_qkv.dtype == torch.float32 or dev.type == "cpu",
            KT=len(plan.kinds) if plan.kind_tables else 0, NM=plan.narrow_merge,
            ALW=plan.attn_wait_loop, RELAXED=relaxed_mask(relaxed_release),
            QLL=plan.qkv_ll, ANL=plan.tiling.attn_new_last, NWE=plan.tiling.norm_early)

    @staticmethod
    def _narrow_consts(plan: P.Plan) -> dict:
        """The narrow steps' constants (Tiling.narrow; TB = 0 compiles them away)."""
        nw, g = plan.tiling.narrow, plan.cfg.group_size
        tp2 = triton.next_power_of_2(max(nw, 1))
        bl = plan.blocks_n or plan.blocks
        out = dict(TB=nw, TP2B=tp2, MB=max(16, triton.next_power_of_2(g) * tp2),
                   TNB=max(16, tp2), BT0B=plan.block_t0(nw) if nw else 0)
        out.update({f"FN_{n}": op in plan.fma_n for op, n in MV_OPS})
        return {**out, **_mv_consts("_N", bl, lambda op: plan.op_stages(op, narrow=True)
                                    if nw else 2)}

    def _args(self, b: W.Buffers, nsteps: int, spin_cap: int, skip: int = 0,
              trace: torch.Tensor | None = None, trace_step: int = -1) -> tuple:
        w, c = self.w, self.plan.cfg
        dummy = w.attn_norm
        return (
            self.instr, self.offs, b.ctr, b.err, b.state, b.fparams, b.tokens, b.stop_ids,
            b.drafts, b.host, b.hist, b.hidden, b.x, b.qkv, b.qkv_ll, b.att_acc, b.att_ml, b.attn,
            b.part, b.act,
            b.logits, b.lm_val, b.lm_idx, b.lm_stat, b.cand, b.m_stat, b.c_bitmask, b.c_default,
            b.c_exc_ptr,
            b.c_exc_tokens, b.c_exc_next, b.c_done, b.c_forced, w.w_qkv,
            dummy if w.b_qkv is None else w.b_qkv, w.attn_norm,
            dummy if w.q_norm is None else w.q_norm,
            dummy if w.k_norm is None else w.k_norm, w.w_o, dummy if w.b_o is None else w.b_o,
            w.mlp_norm, w.w_gu, w.w_down, w.norm, w.embed, w.lm_head,
            *((w.w_eh, w.enorm, w.hnorm, w.mtp_norm) if w.has_mtp else (dummy,) * 4),
            w.cos, w.sin, b.k_cache,
            b.v_cache, nsteps, spin_cap, c.rms_norm_eps, LOG2E / math.sqrt(c.head_dim),
            b.k_cache.shape[2], c.sliding_window or 0, skip,
            self._no_trace if trace is None else trace, trace_step if trace is not None else -1,
            0 if trace is None else trace.shape[1])

    def launch(self, b: W.Buffers, nsteps: int, sampling: bool = False,
               spin_cap: int = DEFAULT_SPIN_CAP, skip: int = 0,
               trace: torch.Tensor | None = None, trace_step: int = -1) -> None:
        """Zero the counters and run up to `nsteps` steps (asynchronous on CUDA). `sampling`
        compiles the variant with temperature / top-k / top-p (greedy does without). `skip`:
        a bit mask of opcodes whose compute is skipped (waits and releases stay): timing
        variants only, the results are then wrong. `trace` (int64 [programs, records per
        program, sync.NSTAMP], see trace_rows): in step `trace_step`, each record's global-timer
        ns when it started, when its wait ended, the ops' phase marks (sync.mark; 0 where an op
        has none) and when it released (tune.py --timeline)."""
        mode = int(b.state[W.MODE]) if b.mode is None else b.mode
        assert sampling or mode == W.GREEDY, "sampling state needs sampling=True"
        assert b.k_cache.shape[2] <= self.w.cos.shape[0], "KV capacity beyond the RoPE table"
        if self.w.w_qkv.is_cuda and sampling not in self._fits:
            try:
                self._fits[sampling] = self.check_fits(b, sampling)
            except (AttributeError, TypeError) as e:  # compiled-kernel API of another triton
                warnings.warn(f"monokernel: residency check skipped ({e})", stacklevel=2)
                self._fits[sampling] = 0
        b.ctr.zero_()
        if self.plan.qkv_ll:  # QKV's tagged words: tags restart at 1 per launch
            assert nsteps * (self.plan.cfg.num_layers + 1) < 2**31, "qkv_ll: tag overflow"
            b.qkv_ll.zero_()
        if self.plan.oproj_merge:  # O-proj's sums (a launch that stopped mid-layer left some)
            b.part.zero_()
        _monokernel[(self.plan.num_programs,)](
            *self._args(b, nsteps, spin_cap, skip, trace, trace_step), SAMPLING=sampling,
            TRACE=trace is not None, num_warps=self.num_warps,
            num_stages=self.num_stages, **self.opts, **self.consts)

    def trace_rows(self) -> int:
        """Records of the busiest program: the middle dimension of a timeline trace."""
        return max(len(p) for k in self.plan.kinds for p in self.plan.kind_programs(k))

    def resident_per_sm(self, b: W.Buffers, sampling: bool) -> int:
        """Compile without launching; programs of this kernel that fit on one SM at once."""
        k = _monokernel.warmup(*self._args(b, 1, 1), SAMPLING=sampling, TRACE=False, grid=(1,),
                               num_warps=self.num_warps, num_stages=self.num_stages,
                               **self.opts, **self.consts)
        k._init_handles()
        props = torch.cuda.get_device_properties(b.x.device)
        regs_sm = getattr(props, "regs_per_multiprocessor", 65536)
        smem_sm = getattr(props, "shared_memory_per_multiprocessor", 233472)
        warp_regs = -(-k.n_regs * 32 // 256) * 256  # allocated per warp in units of 256
        per_sm = min(regs_sm // (warp_regs * self.num_warps),
                     smem_sm // max(1, k.metadata.shared + 1024), 32)
        self.fit_info = dict(registers=k.n_regs, spills=getattr(k, "n_spills", None),
                             shared=k.metadata.shared, programs_per_sm=per_sm,
                             sms=props.multi_processor_count)
        return per_sm

    def check_fits(self, b: W.Buffers, sampling: bool) -> int:
        """Every program must be resident at once: a persistent kernel whose programs cannot
        all run would wait for ever (here: until the wait cap, then an error)."""
        per_sm = self.resident_per_sm(b, sampling)
        sms = self.fit_info["sms"]
        if self.plan.num_programs > per_sm * sms:
            raise MonokernelError(
                f"monokernel: {self.plan.num_programs} programs cannot all be resident: "
                f"{self.fit_info['registers']} registers/thread x {self.num_warps} warps and "
                f"{self.fit_info['shared']} B shared memory fit {per_sm} per SM on {sms} SMs")
        return per_sm

    def check(self, b: W.Buffers) -> None:
        """Raise the error the kernel recorded, if any (after it finished)."""
        raise_recorded(self.plan, b.err)


def raise_recorded(plan: P.Plan, err: torch.Tensor) -> None:
    code, rec, seq, wseq, target, seen, pid, step = err.tolist()
    if code == 0:
        return
    if code == W.ERR_CAP:
        raise RequestError(f"monokernel: the top-p nucleus reached past the {plan.tiling.cand} "
                           "candidates the kernel keeps (set top_k, or use another backend)")
    name = plan.ops[seq].name if 0 <= seq < len(plan.ops) else f"op {seq}"
    if code == W.ERR_OPCODE:
        raise MonokernelError(f"monokernel: {name} has an opcode this kernel does not run")
    if code == W.ERR_DEAD:
        raise MonokernelError(f"monokernel: token {wseq} is not allowed by the constraint in "
                              f"automaton state {target} (nothing was: non-finite logits?)")
    dep = plan.ops[wseq].name if 0 <= wseq < len(plan.ops) else f"counter {wseq}"
    where = "at the start of the step" if rec < 0 else f"before {name} (record {rec})"
    if code == W.ERR_LL:
        nl = plan.cfg.num_layers + 1
        raise MonokernelError(
            f"monokernel stalled: program {pid} in step {step} waited in {name} (record {rec}) "
            f"for the outputs of {dep} tagged {target} (step {(target - 1) // nl}, layer "
            f"{(target - 1) % nl}), the oldest word seen has tag {seen}; the wait cap expired")
    raise MonokernelError(
        f"monokernel stalled: program {pid} in step {step} waited {where} for the counter of "
        f"{dep} to reach {target}, saw {seen}; the wait cap expired")
