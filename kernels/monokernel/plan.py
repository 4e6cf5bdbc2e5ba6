"""The instruction stream of the monokernel: dataclasses, their int32 records, the planner.

One decode step is a fixed sequence of ops (per layer: QKV, ATTN, OPROJ, GATEUP, DOWN, with
ALLREDUCE after OPROJ and DOWN when ranks > 1; then LMHEAD, SAMPLE; a plan with mtp=True then
runs an MTP module over the step's positions: MTP_EH, the module's layer as layer L (QKV ..
DOWN on its own rows of x), its LMHEAD (layer L) over the last kept position, MTP_SAMPLE).
ATTN's splits merge themselves (the last split of a kv head to finish, by a ticket counter per
layer and kv head), or in one-position steps OPROJ_M merges them (Tiling.oproj_merge: O-proj's
tiles are (kv head, rows), summed into `part`; a T > 1 plan has both OPROJ_M, run in its
one-position steps (with Tiling.narrow_merge its narrow ones too), and OPROJ, run in the
others, GATEUP waiting for the one that ran).
Op number `seq` in that sequence is also the index of its dependency counter. Each op is cut
into tiles (rows of a weight, or (kv head, KV split) pairs); each program gets one contiguous
run of tiles per op, runs balanced by bytes read, in op order. A run waits until the counter of
the op before it reaches epoch * tiles (epoch = step number from 1, never reset within a
launch; the first op waits for the previous step's last op), then computes, then adds its tile
count to its own counter with release semantics. Knows shapes and bytes, not tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from agentfast.engine.config import ModelConfig

(NOP, QKV, ATTN, OPROJ, GATEUP, DOWN, LMHEAD, SAMPLE, ALLREDUCE, MTP_EH, MTP_SAMPLE,
 FILL_NEXT, OPROJ_M) = range(13)
OP_NAMES = {QKV: "QKV", ATTN: "ATTN", OPROJ: "OPROJ", GATEUP: "GATEUP", DOWN: "DOWN",
            LMHEAD: "LMHEAD", SAMPLE: "SAMPLE", ALLREDUCE: "ALLREDUCE", NOP: "NOP",
            MTP_EH: "MTP_EH", MTP_SAMPLE: "MTP_SAMPLE", FILL_NEXT: "FILL_NEXT",
            OPROJ_M: "OPROJ_M"}
RECORD = 12  # int32 fields per serialized instruction


@dataclass(frozen=True)
class Instr:
    """A run of tiles [start, end) of op `seq`. Waits for counter `wait_seq` to reach
    (epoch - prev) * wait_count, then adds its tile count `signal` to counter `seq`."""

    opcode: ClassVar[int] = NOP
    seq: int
    layer: int
    start: int
    end: int
    wait_seq: int
    wait_count: int
    wait_prev: bool
    signal: int
    cost: int  # bytes this run reads (weights, KV): what the planner balances

    def extra(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def serialize(self) -> list[int]:
        """[opcode, seq, layer, start, end, k0, k1, aux, wait_seq, wait_count, wait_off, signal]"""
        return [self.opcode, self.seq, self.layer, self.start, self.end, *self.extra(),
                self.wait_seq, self.wait_count, -1 if self.wait_prev else 0, self.signal]


@dataclass(frozen=True)
class Qkv(Instr):
    """Rows [start, end) of the fused [q + 2kv, H] weight; RMSNorm of x fused; -> qkv fp32."""

    opcode: ClassVar[int] = QKV


@dataclass(frozen=True)
class Attn(Instr):
    """Tiles kvh * splits + split: q/k norm, RoPE, K/V append of the new positions that fall in
    the split's chunk, partial softmax over the chunk for the group's heads and all T; the
    last live split of a kv head merges the partials of its heads -> attn [T, q]."""

    opcode: ClassVar[int] = ATTN


@dataclass(frozen=True)
class OProj(Instr):
    """Rows of Wo over columns [k0, k1) (this rank's heads); partial: write `part`, else add
    the bias and the residual into x."""

    opcode: ClassVar[int] = OPROJ
    k0: int = 0
    k1: int = 0
    partial: bool = False

    def extra(self) -> tuple[int, int, int]:
        return (self.k0, self.k1, int(self.partial))


@dataclass(frozen=True)
class OProjMerge(Instr):
    """Plan.oproj_merge: rows of Wo over kv head k's group columns [k0, k1), the rows of
    head k numbered k * H + row (start, end): merge the group's attention split partials,
    W @ them (+ the bias at k = 0) summed into `part`."""

    opcode: ClassVar[int] = OPROJ_M
    k0: int = 0
    k1: int = 0

    def extra(self) -> tuple[int, int, int]:
        return (self.k0, self.k1, 0)


@dataclass(frozen=True)
class GateUp(Instr):
    """Rows [start, end) of I: silu(Wg @ n(x)) * (Wu @ n(x)) -> act, RMSNorm fused. In a T > 1
    plan with OPROJ_M, a one-position step waits for counter `alt_seq` to reach epoch *
    `alt_count` instead (OPROJ_M; its OPROJ is skipped)."""

    opcode: ClassVar[int] = GATEUP
    alt_seq: int = 0
    alt_count: int = 0

    def extra(self) -> tuple[int, int, int]:
        return (self.alt_seq, self.alt_count, 0)


@dataclass(frozen=True)
class Down(OProj):
    """Rows of Wdown over columns [k0, k1) (this rank's FFN slice); + residual or partial."""

    opcode: ClassVar[int] = DOWN


@dataclass(frozen=True)
class AllReduce(Instr):
    """x += sum over ranks of `part` (+ the O-proj bias once): the tensor-parallel sync point."""

    opcode: ClassVar[int] = ALLREDUCE
    bias: bool = False

    def extra(self) -> tuple[int, int, int]:
        return (0, 0, int(self.bias))


@dataclass(frozen=True)
class LmHead(Instr):
    """Vocabulary rows [start, end) with the final RMSNorm fused -> logits, per-tile argmax (or
    Gumbel argmax, or softmax stats) and, for top-k/top-p, candidate list number `slot`."""

    opcode: ClassVar[int] = LMHEAD
    slot: int = 0

    def extra(self) -> tuple[int, int, int]:
        return (0, 0, self.slot)


@dataclass(frozen=True)
class Sample(Instr):
    """Token choice per position, draft acceptance, stop checks, output ring, next inputs."""

    opcode: ClassVar[int] = SAMPLE


@dataclass(frozen=True)
class MtpEh(Instr):
    """Rows [start, end) of the MTP module's input projection [H, 2H] for each position t of
    the step: [enorm(embed(the token after t)); hnorm(the kept hidden state at t)] -> the
    module's rows of x (x[T + t])."""

    opcode: ClassVar[int] = MTP_EH


@dataclass(frozen=True)
class MtpSample(Instr):
    """The MTP head's draft (argmax over its tiles) and probability; the next step narrow with
    it where SAMPLE left it one position (weights.M_ON)."""

    opcode: ClassVar[int] = MTP_SAMPLE


@dataclass(frozen=True)
class FillNext(Instr):
    """The end of a step of a module fill (plan(fill=True)): the position advances by T; past
    weights.FILL_END the launch ends."""

    opcode: ClassVar[int] = FILL_NEXT


@dataclass(frozen=True)
class Tiling:
    # Defaults from kernels/monokernel/tune.py on an H200 (BENCH.md): 2 programs of 4 warps
    # per SM (registers uncapped), 3 stages of <= 16 KB tiles.
    bn: int = 0  # weight rows per matvec tile; 0: per op (block_sizes)
    bk: int = 0  # K elements per matvec step; 0: per op, from `chunk`
    chunk: int = 8192  # weight elements per program per matvec step
    stages: int = 3  # matvec pipeline stages at most (cp.async to shared memory, stages - 1 in
    # flight), per op fewer where its runs are shorter or its tiles would take more than `smem`
    smem: int = 96 * 1024  # shared memory per program for the matvec stages (2 fit an H200 SM)
    # per-op caps on `stages` (0: stages): the tiles QKV, O-proj with the merge, gate/up and
    # down request before their waits. The wait's poll returns behind the data in flight, as
    # its acquire completes after the warp's copies (sync.py): Llama-3.2-1B, gate/up's wake-up
    # 1.83 -> 1.05 us with stages_gu=2, but the op then streams slower (busy 16.4 -> 17.5
    # us). H200, ctx 1024, T = 1, us per step, default /
    # stages_gu=2 / + stages_qkv=2 / stages_dn=2 + stages_om=2 / stages=2 / default: Llama
    # 807.8 / 813.9 / 813.5 / 827.3 / 850.9 / 812.4, Qwen3-1.7B 1,308.5 / 1,309.1 / 1,317.2 /
    # 1,330.6 / 1,363.3 / 1,305.0, SmolLM2 533.4 / 531.2 / 533.1 / 532.4 / 533.3 / 531.6
    # (bench/results/monokernel-20261202-s24, run 4). Above 3 it is slower the other way: the
    # wake comes later (gate/up 1.80 -> 3.10 us with 5). Default / stages_gu 4 / 5 / 6 /
    # default: Llama 813.4 / 817.5 / 825.2 / 840.4 / 818.1, Qwen3-1.7B 1,304.2 / 1,324.9 /
    # 1,354.8 / 1,378.0 / 1,305.9 (bench/results/monokernel-20261202-s25, run 1). QKV's and
    # O-proj's whole runs before the wait, the same: stages_qkv=4 Llama 812.7 -> 821.1, Qwen3
    # 1,310.5 -> 1,327.9; stages_om 4 / 5 Llama 810.0 -> 812.7 / 816.5 (bench/results/
    # monokernel-20261203-s28, runs 7 and 5)
    stages_qkv: int = 0
    stages_om: int = 0
    stages_gu: int = 0
    stages_dn: int = 0
    bn_lm: int = 16  # vocabulary rows per LM-head tile (the granularity of the LM partials)
    bn_lm_t: int = 32  # the same when T > 1 (H200, T = 4, 16 / 32 / 64 rows: 318 / 255 / 288 us)
    attn_splits: int | None = None  # KV splits per kv head (default: from the program count)
    # splits in a T > 1 step (default 8, or attn_splits): its first tiles of each kv head
    attn_splits_t: int | None = None
    # keys per attention block (0: attn_block(): at T = 1 in 16 bits 64 on the loop path
    # (Plan.attn_wait_loop, the blocks through shared memory), else 4096 / head_dim, i.e. a
    # block of keys and one of values, 8 KB each, held across the wait: 64 keys at head_dim 64,
    # 32 at 128, where 64 spilled registers; else 32, as 64 rows of fp32 or of T > 1 do not fit
    # 2 programs per SM), and T = 1's new key folded into the cached blocks (ops_attn FOLD).
    # H200, ctx 1024, us/step, 32-key blocks unfolded -> folded -> 64-key blocks folded:
    # Qwen3-1.7B 1,372 -> 1,348 -> 1,364, Llama-3.2-1B 856 -> 853 -> 846, SmolLM2 588 -> 584 -> 570
    # (bench/results/monokernel-20261129-s6). Again with today's kernel, Qwen3-1.7B 32 -> 64:
    # 1,311.5 -> 1,330.2 us (255 registers), 1,427.8 through shared memory (attn_wait_loop,
    # spilling) (bench/results/monokernel-20261203-s28, run 8)
    attn_block: int = 0
    # keys of a T > 1 split's first block, requested before the wait and held in registers
    # across it; the blocks after it stream through the cp.async loop. 0: 128 where the
    # step's query rows (group x T, padded) are <= 32 and head_dim <= 64, else attn_block.
    # H200, SmolLM2, ctx 1024, us per step, 32 -> 128: T = 4 841 -> 813 (256: 838, spilling);
    # T = 8 1,342 -> 1,322; T = 16 (64 query rows) 1,305 -> 1,347, spilling (runs with a
    # matvec variant since dropped; bench/results/monokernel-20261130-s13)
    attn_block_t0: int = 0
    attn_stages: int = 3  # pipeline stages of the key-block loop (cp.async)
    # the same for the one-position loop path (Plan.attn_wait_loop; 0: 2 at head_dim > 64,
    # where a 64-key block of keys or values is 16 KB, else attn_stages). H200, ctx 1024, us per
    # step, 3 / 2 stages, same call: Qwen3-1.7B 1,260.1 / 1,246.0, 1,253.9 / 1,247.0 and 1,254.2
    # / 1,249.8, 1,254.4 / 1,248.7; Qwen3-8B 3,955.8 / 3,927.2, 3,959.2 / 3,925.1; at head_dim
    # 64 none: Llama-3.2-1B 799.7 / 792.6, 795.1 / 795.9, SmolLM2 507.5 / 513.0, 510.1 / 509.3
    # (bench/results/monokernel-20261204-s35, runs 8, 9, 11)
    attn_stages_one: int = 0
    attn_fold: bool = True
    # one-position steps whose O-proj merges the splits, new key folded in: the wait for QKV
    # inside the key-block loop's first iteration (ops_attn.attn_run_one: the blocks stream
    # through shared memory, up to attn_stages - 1 requested before the wait, the new key
    # patched in from registers or, attn_new_last, its own step) instead of the first block
    # held in registers across it and the rest loaded after it (ops_attn.attn_run). Until
    # session 35 on at head_dim <= 64 only. H200, ctx 1024, T = 1, us per step, off / on /
    # off, two calls: Llama-3.2-1B 824.4 / 815.4 / 822.5 and
    # 821.8 / 814.5 / 819.1, SmolLM2 540.3 / 532.8 / 537.1 and 539.5 / 533.0 / 542.1; head_dim
    # 128 (two 32-key blocks a chunk from ctx 1024): Qwen3-1.7B 1,311.4 / 1,314.3 / 1,309.8,
    # Qwen3-8B 4,093 / 4,141 / 4,077 (10 spill words); 64-key blocks through the loop spill
    # (Qwen3-1.7B 1,399-1,426) (bench/results/monokernel-20261202-s24, runs 1-2). With
    # attn_new_last (no register round trip) it pays at head_dim 128 too, 64-key blocks most:
    # H200, ctx 1024, us per step, session 34's default (off, 32-key blocks) / on, 32 / on, 64:
    # Qwen3-1.7B 1,291.9 / 1,270.7 / 1,254.1 and 1,287.8 / 1,271.2 / 1,256.0, Qwen3-8B 4,059.6
    # / 4,027.3 / 4,015.6 and 4,057.4 / 4,025.1 / 4,015.2 (bench/results/monokernel-20261204-
    # s35, run 2). None: on
    attn_wait_loop: bool | None = None
    # the merge of a kv head's split partials, when the whole group's are too many for one
    # round of loads (G x splits x T x head_dim > 8192: Qwen3-8B at T = 1, every T > 1 shape):
    # False, split by split (a dependent L2 round trip per split and head); True, every split
    # of a head (and of as many positions as fit 8192 elements) in one round (ops_attn._merge);
    # None: True at T = 1 only. H200, ctx 1024, us per step, False -> True: Qwen3-8B T = 1
    # 4,297 -> 4,249, T = 8 6,238 -> 7,091; Qwen3-1.7B T = 8 2,162 -> 2,441; SmolLM2 T = 8
    # 1,230 -> 1,351 (bench/results/monokernel-20261130-s11, run 1)
    merge_heads: bool | None = None
    # elements of split partials the merging program loads in one round (ops_attn._merge;
    # fp32: 8192 is 64 registers a thread at 4 warps); the T = 1 split count follows from it.
    # 0: 16384 at T > 1 with head_dim <= 64, else 8192. H200, ctx 1024, T = 8, us per step,
    # 8192 -> 16384: SmolLM2 1,376 -> 1,342 (the group's 8 splits x 8 positions in one round
    # instead of split by split); Qwen3-1.7B (head_dim 128) 2,216 -> 2,287, spilling
    # (bench/results/monokernel-20261130-s13)
    merge_elems: int = 0
    cand: int = 64  # candidates per list: the cap on top-k, and on the top-p nucleus
    # T = 1 whole-row tiles: a program's rows of an op in this many tiles where `chunk` allows
    # (H200, 2 x 4 warps: SmolLM2 637 -> 589 us/step with one tile of 4 rows instead of 1-2 of
    # 1-2 rows; bench/results/monokernel-launch-20261129)
    tiles: int = 1
    # T > 1 matvecs with whole-row tiles of a few rows, as at T = 1 (FMA over the step's T
    # positions: ops_mv.mv_tiles_t) for T <= fma_t_max where the [BN, T, BK] products fit
    # `fma_t_elems`; else tl.dot on tiles of >= 16 rows (which on small models leaves most
    # programs without a tile). H200, ctx 1024, us per step, tl.dot -> FMA: SmolLM2 T = 4
    # 1,063 -> 834, T = 8 1,225 -> 1,296, T = 16 1,271 -> 1,385; Qwen3-1.7B T = 4 2,050 ->
    # 2,023, T = 8 2,152 -> 2,301 (bench/results/monokernel-20261129-s6, run 6)
    fma_t: bool = True
    fma_t_max: int = 4
    fma_t_elems: int = 16384
    # T > 1 plans cut the matvec ops into the T = 1 plan's whole-row tiles (the records), so a
    # one-position step (per-step switching) runs them as a T = 1 kernel does; a T-position
    # step walks each program's run in its own tiles (Plan.blocks_t: FMA, or tl.dot on 16
    # rows, the rows past the run masked). False: the records follow the T-step's tiles. H200,
    # ctx 1024, us per step, False -> True: SmolLM2 one-position steps of the T = 4 / 8 / 16
    # kernels 580 / 735 / ~735 -> 563 / 575 / 576 (T = 1 kernel 567-570), their T-steps 803 /
    # 1,174 / 1,217 -> 826 / 1,187 / 1,277; Qwen3-1.7B T = 4: one 1,510 -> 1,358 (T = 1
    # 1,351), T-step 2,043 -> 2,028 (bench/results/monokernel-20261130-s13)
    one_tiles: bool = True
    # a T-position plan whose kernel also runs narrow steps of this many positions (2..T - 1;
    # 0: none): per-step switching among one position, `narrow` and T (weights.D_WIDE: the
    # drafter's steps run narrow and widen to T after a step that kept D_NEED drafts)
    narrow: int = 0
    # one rank, one-position steps: O-proj merges the attention splits itself (OPROJ_M,
    # ops_attn.oproj_merge_run) instead of the last split of each kv head (by a ticket): its
    # tiles are (kv head, rows), each over that head group's columns of Wo, summed into `part`
    # by fp32 atomics; GATEUP reads round(x + part), DOWN adds it into the residual and zeroes
    # it. One ticket, one merging program's round trips and one release per layer fewer on the
    # critical path. None: on with whole-row tiles (bk 0) on one rank, at T = 1 and at T > 1
    # (records in T = 1 tiles). H200, ctx 1024, us per T = 1 step, off -> on: Llama-3.2-1B
    # 844 -> 822, Qwen3-1.7B 1,354 -> 1,321, SmolLM2 573 -> 544, Qwen3-8B 4,100 -> 4,085. At
    # T > 1 OPROJ_M runs in the one-position steps, OPROJ in the others (waiting for ATTN
    # itself), each released without a fence where it does nothing (sync.release_idle); a
    # T = 16 kernel with narrow 2, SmolLM2, one / narrow / T-step, off -> on: 571.5 / 701.3 /
    # 1,298.6 -> 545.3 / 726.4 / 1,334.2 (bench/results/monokernel-20261201-s21, run 5; with
    # the fenced release of the idle records, session 18: 574 / 697 / 1,301 -> 573 / 745 /
    # 1,372, off by default then)
    oproj_merge: bool | None = None
    # T > 1: each step kind walks its own record table (Plan.kind_programs), without the records
    # that do nothing in it (OPROJ in one-position steps where OPROJ_M merges, OPROJ_M in the
    # others, ATTN tiles past a T-step's splits): one record per layer and idle op keeps its
    # place and adds their whole count to the op's counter (targets stay epoch x count).
    # H200, T = 16 narrow 2, one / narrow / wide step, off -> on, same call: SmolLM2 544.9 /
    # 728.3 / 1,342.4 -> 543.7 / 712.0 / 1,309.9 us; Qwen3-1.7B 1,472.2 / 1,828.7 / 3,091.4 ->
    # 1,460.5 / 1,809.9 / 3,066.4 (bench/results/monokernel-20261201-s22, run 1)
    kind_tables: bool = True
    # T > 1 with narrow steps of 2 positions and oproj_merge: O-proj merges the narrow steps'
    # attention splits too (OPROJ_M over both positions, `part` [2, H]; GATEUP and DOWN on
    # the FMA path read it as in one-position steps), the narrow steps walking a record table
    # of their own (kind tables: one position, narrow, wide). None: on where the narrow steps'
    # gate/up and down run the FMA path and the merge's partials fit one round. H200, T = 16
    # narrow 2, narrow step, same call, off -> on: SmolLM2 702.3 -> 674.5 us, Qwen3-1.7B
    # 1,739.6 -> 1,698.8; one-position and wide steps unchanged
    # (bench/results/monokernel-20261202-s23, run 3)
    narrow_merge: bool | None = None
    # T = 1 kernels: QKV hands q, k and v to attention as words that carry their own flag
    # (NCCL's LL protocol: fp32 value and a step-and-layer tag in one 8-byte store, sync.ll_pack)
    # which attention polls, instead of QKV's release (the fence before the add waits for the
    # program's stores: ~1 us a layer on the critical path, BENCH.md session 33) and an
    # acquire on its counter. None: on where QKV's T = 1 tiles are whole rows, no MTP module
    qkv_ll: bool | None = None
    # attention of one position on the loop path (Plan.attn_wait_loop): the new key takes an
    # online step of its own after the cached blocks instead of being patched into the block
    # that holds its position, so the blocks go from the cp.async buffers straight into the
    # dots (patching one row made each block a shared -> registers -> shared round trip after
    # the wait). H200, ctx 1024, us per step, off / on, twice: Llama-3.2-1B 815.6 / 807.4 and
    # 813.9 / 811.1, SmolLM2 521.7 / 508.0 and 526.4 / 509.9 (bench/results/monokernel-
    # 20261204-s35, run 1)
    attn_new_last: bool = True
    # T = 1 matvecs with an RMSNorm (QKV, gate/up; ops_mv.mv_tiles): the norm weights requested
    # before the wait for x and held in registers across it (16 registers a thread at H = 2048)
    # instead of loaded after x's sum of squares, a dependent round trip on every layer's path
    # twice (offline sm_90 compile: the load follows the reduction's barrier). H200, ctx 1024,
    # us per step, off / on, twice (bench/results/monokernel-20261204-s36, run 14): Llama-3.2-1B
    # 804.0 / 788.7 and 801.8 / 790.7, Qwen3-1.7B 1,251.7 / 1,235.5 and 1,254.4 / 1,230.3,
    # SmolLM2 508.7 / 498.0 and 506.9 / 496.8, Qwen3-8B 3,994.9 / 3,944.6 and 3,992.2 / 3,943.4
    norm_early: bool = True


def attn_block(head_dim: int, T: int, wbytes: int, loop: bool = False) -> int:
    """Keys per attention block by default (Tiling.attn_block): at T = 1 in 16 bits, 64 where
    the blocks stream through shared memory into the dots (`loop`: Plan.attn_wait_loop, head_dim
    <= 128), else 4096 / head_dim (16..64: a block of keys and one of values held in registers
    across the wait); 32 otherwise."""
    if T == 1 and wbytes <= 2:
        return 64 if loop and head_dim <= 128 else min(64, max(16, 4096 // head_dim))
    return 32


def wait_loop(tiling: Tiling, oproj_merge: bool) -> bool:
    """Tiling.attn_wait_loop resolved (None: on) for a plan whose one-position steps merge in
    O-proj (`oproj_merge`): those steps' attention waits inside its key-block loop (needs the
    merge in O-proj and attn_fold)."""
    on = True if tiling.attn_wait_loop is None else tiling.attn_wait_loop
    return bool(on) and oproj_merge and tiling.attn_fold


def merge_round(tiling: Tiling, T: int, head_dim: int) -> int:
    """Tiling.merge_elems resolved for steps of T positions: 16384 at T > 1 with head_dim <= 64,
    else 8192."""
    if tiling.merge_elems:
        return tiling.merge_elems
    return 16384 if T > 1 and head_dim <= 64 else 8192


def _pow2_floor(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def fma_t_blocks(rows: int, K: int, programs: int, T: int, tiling: Tiling,
                 gated: bool = False) -> tuple[int, int] | None:
    """T > 1 on the FMA path (Tiling.fma_t, T <= fma_t_max): T = 1's whole-row (BN, BK), BN
    halved until the products of a tile, BN x T (a power of two) x BK (twice for gate/up), fit
    Tiling.fma_t_elems; None where not even one row fits (the tl.dot path then)."""
    if not tiling.fma_t or not 1 < T <= tiling.fma_t_max:
        return None
    bn, bk = block_sizes(rows, K, programs, 1, tiling, gated, whole_k=True)
    per_row = (1 << (T - 1).bit_length()) * bk * (2 if gated else 1)  # products of one row
    while bn > 1 and bn * per_row > tiling.fma_t_elems:
        bn //= 2
    return (bn, bk) if bn * per_row <= tiling.fma_t_elems else None


def block_sizes(rows: int, K: int, programs: int, T: int, tiling: Tiling, gated: bool = False,
                bn: int | None = None, whole_k: bool = False) -> tuple[int, int]:
    """(BN, BK) of one matvec op. BN rows per tile: the most up to 16 that still gives every
    program two tiles (16 at least when T > 1: tl.dot). whole_k (T = 1): BK covers K (a power
    of two, padding masked) and BN is the power of two that covers a program's share of the
    rows in `Tiling.tiles` tiles, shrunk until a tile is at most `chunk` weights (half each for
    gate/up): tiles stream through the pipeliner, x is read once. Otherwise BK is a power of
    two with BN x BK near `chunk`, the one that pads K least per step (256 lanes of cost per
    step against the padding)."""
    if bn is None and whole_k and T == 1 and not tiling.bn:
        share = -(-rows // (programs * max(1, tiling.tiles)))
        bn = min(16, 1 << max(0, (share - 1).bit_length()))
    if bn is None:
        bn = tiling.bn or max(1, min(16, _pow2_floor(rows // (2 * programs))))
    if T > 1:
        bn = max(bn, 16)
    if tiling.bk:
        return bn, tiling.bk
    cap = max(64, _pow2_floor(tiling.chunk // bn // (2 if gated else 1)))
    if whole_k and T == 1:
        bk = 1 << max(0, (K - 1).bit_length())
        if not tiling.bn:
            bn = max(1, min(bn, _pow2_floor(tiling.chunk // bk // (2 if gated else 1))))
        return bn, bk
    cands = [1 << i for i in range(6, 20) if (1 << i) <= min(cap, max(64, 2 * K))]
    bk = min(cands, key=lambda b: (math.ceil(K / b) * (b + 256), -b))
    return bn, bk


@dataclass(frozen=True)
class OpInfo:
    seq: int
    opcode: int
    layer: int  # -1 for LMHEAD and SAMPLE
    tiles: int  # per rank

    @property
    def name(self) -> str:
        where = f"layer {self.layer} " if self.layer >= 0 else ""
        return f"{where}{OP_NAMES[self.opcode]} (op {self.seq})"


@dataclass
class Plan:
    cfg: ModelConfig
    num_programs: int
    T: int
    max_len: int
    ranks: int
    tiling: Tiling
    splits: int
    ops: list[OpInfo]
    programs: list[list[list[Instr]]]  # [rank][program] -> instructions in op order
    blocks: dict[int, tuple[int, int]] = field(default_factory=dict)  # opcode -> (BN, BK)
    # the same for the T-position steps' matvecs where they differ (Tiling.one_tiles)
    blocks_t: dict[int, tuple[int, int]] = field(default_factory=dict)
    wbytes: int = 2  # bytes per weight
    last_seq: int = field(default=-1)  # < len(ops) - 1: a truncated plan (debugging)
    fma_t: frozenset[int] = frozenset()  # T > 1 matvec ops on the FMA path (Tiling.fma_t)
    t_splits: int = 0  # KV splits of a T-position step (0: splits); ATTN tiles: splits per kv head
    # the narrow steps' (Tiling.narrow), and their matvec ops on the FMA path
    blocks_n: dict[int, tuple[int, int]] = field(default_factory=dict)
    fma_n: frozenset[int] = frozenset()
    mtp: bool = False  # an MTP module's ops after SAMPLE (its layer is layer cfg.num_layers)
    fill: bool = False  # the module's ops alone, T positions a step (plan(fill=True))
    # O-proj merges the attention splits in one-position steps (Tiling.oproj_merge: OPROJ_M)
    oproj_merge: bool = False
    # ... and in the narrow steps (Tiling.narrow_merge)
    narrow_merge: bool = False

    @property
    def split_ratio(self) -> int:
        """ATTN tiles per kv head over the splits of a T-position step (1 when T = 1)."""
        return self.splits // (self.t_splits or self.splits)

    @property
    def merge_heads(self) -> bool:  # Tiling.merge_heads resolved for this plan's T
        mh = self.tiling.merge_heads
        return self.T == 1 if mh is None else bool(mh)

    @property
    def merge_round(self) -> int:  # Tiling.merge_elems resolved for this plan's T
        return merge_round(self.tiling, self.T, self.cfg.head_dim)

    @property
    def stages_one(self) -> int:
        """Tiling.attn_stages_one resolved: the one-position loop path's key-block stages."""
        if self.tiling.attn_stages_one:
            return self.tiling.attn_stages_one
        return 2 if self.cfg.head_dim > 64 else self.tiling.attn_stages

    @property
    def block_one(self) -> int:
        """Keys per attention block of a one-position step: the plan's at T = 1, else the
        T = 1 default (a T > 1 kernel's one-position steps attend as a T = 1 kernel does)."""
        if self.T == 1:
            return self.tiling.attn_block
        return attn_block(self.cfg.head_dim, 1, self.wbytes, self.attn_wait_loop)

    def block_t0(self, T: int | None = None) -> int:
        """Tiling.attn_block_t0 resolved for steps of T positions (default: the plan's; 0 at
        T = 1: attn_block)."""
        T = T or self.T
        if T == 1:
            return 0
        if self.tiling.attn_block_t0:
            return self.tiling.attn_block_t0
        rows = _pow2_ceil(self.cfg.group_size) * _pow2_ceil(T)
        return 128 if rows <= 32 and self.cfg.head_dim <= 64 else 0

    @property
    def TP(self) -> int:  # positions padded: 1, or 16 for tl.dot
        return 1 if self.T == 1 else 16

    def op_stages(self, opcode: int, t_step: bool = False, narrow: bool = False) -> int:
        """Pipeline stages of one matvec op's loop (cp.async to shared memory, stages - 1
        requested before the op's wait): Tiling.stages at most, no more than the longest run
        of chunks a program has in this op needs, and >= 2; the stages must fit Tiling.smem.
        t_step: of the T-position steps' tiles (blocks_t); narrow: the narrow steps'."""
        bl = self.blocks_n if narrow else (self.blocks_t or self.blocks) if t_step else self.blocks
        bn, bk = bl[opcode]
        k = {QKV: self.cfg.hidden_size, GATEUP: self.cfg.hidden_size,
             LMHEAD: self.cfg.hidden_size, OPROJ: self.cfg.q_size // self.ranks,
             OPROJ_M: self.cfg.group_size * self.cfg.head_dim,
             DOWN: self.cfg.intermediate_size // self.ranks,
             MTP_EH: 2 * self.cfg.hidden_size}[opcode]
        chunk_bytes = bn * bk * self.wbytes * (2 if opcode == GATEUP else 1)
        runs = [i.end - i.start for i in self.instructions() if i.opcode == opcode] or [bn]
        chunks = -(-max(runs) // bn) * -(-k // bk)
        t = self.tiling
        cap = {QKV: t.stages_qkv, OPROJ_M: t.stages_om, GATEUP: t.stages_gu,
               DOWN: t.stages_dn}.get(opcode, 0) or t.stages
        return max(2, min(cap, chunks + 1, t.smem // chunk_bytes))

    @property
    def bn_lm(self) -> int:
        return self.blocks[LMHEAD][0]

    @property
    def n_lm_tiles(self) -> int:
        return math.ceil(self.cfg.vocab_size / self.bn_lm)

    @property
    def n_cand_lists(self) -> int:
        return sum(isinstance(i, LmHead) and i.layer < 0 for p in self.programs[0] for i in p)

    @property
    def sample_seq(self) -> int:
        return next((o.seq for o in self.ops if o.opcode == SAMPLE), -1)

    @property
    def end_seq(self) -> int:
        """The step's last op (SAMPLE, or MTP_SAMPLE): the next step waits for it."""
        return len(self.ops) - 1

    @property
    def n_layers(self) -> int:
        """Layers of weights and KV the plan addresses: the model's, + 1 with an MTP module."""
        return self.cfg.num_layers + int(self.mtp)

    @property
    def ticket_base(self) -> int:
        """Counter index of the first attention ticket (layer l, local kv head h at
        ticket_base + l * kv heads per rank + h)."""
        return len(self.ops)

    @property
    def n_counters(self) -> int:
        return len(self.ops) + self.n_layers * (self.cfg.num_kv_heads // self.ranks)

    def instructions(self, rank: int = 0) -> list[Instr]:
        return [i for p in self.programs[rank] for i in p]

    @property
    def attn_wait_loop(self) -> bool:
        """Tiling.attn_wait_loop resolved (wait_loop)."""
        return wait_loop(self.tiling, self.oproj_merge)

    @property
    def qkv_ll(self) -> bool:
        """Tiling.qkv_ll resolved: a T = 1 decode plan on one rank, no MTP module, QKV in whole
        rows (ops_mv.qkv_run's mv_tiles path)."""
        on = self.tiling.qkv_ll
        fits = (self.T == 1 and self.ranks == 1 and not self.mtp and not self.fill
                and self.blocks[QKV][1] >= self.cfg.hidden_size)
        if on and not fits:
            raise ValueError("Tiling.qkv_ll: a T = 1 plan on one rank without an MTP module, "
                             "QKV in whole-row tiles")
        return fits if on is None else bool(on)

    @property
    def kind_tables(self) -> bool:
        """Tiling.kind_tables in effect: a decode plan of T > 1 positions (no MTP module) with
        records idle in one of its step kinds."""
        return (self.tiling.kind_tables and self.T > 1 and not self.mtp and not self.fill
                and (self.oproj_merge or self.split_ratio > 1))

    def merges(self, kind: int) -> bool:
        """OPROJ_M merges the attention splits in steps of width code `kind` (weights.STEP_ONE:
        1 one position, 2 narrow, 0 all T; a T = 1 plan's steps: any)."""
        if not self.oproj_merge:
            return False
        return self.T == 1 or kind == 1 or (kind == 2 and self.narrow_merge)

    @property
    def kinds(self) -> list[int]:
        """The step kinds (width codes) with a record table each, in table order
        (Plan.kind_tables): one position, then the others; with narrow_merge one position,
        narrow, wide. [0] (every step the plan's records) where kind tables are off."""
        if not self.kind_tables:
            return [0]
        return [1, 2, 0] if self.narrow_merge else [1, 0]

    def _idle(self, ins: Instr, kind: int) -> bool:
        """Whether the record does nothing in steps of width code `kind` (1 one position, 2
        narrow, 0 wide)."""
        if ins.opcode == OPROJ:
            return self.merges(kind)
        if ins.opcode == OPROJ_M:
            return not self.merges(kind)
        if ins.opcode == ATTN and kind != 1 and self.split_ratio > 1:
            se = self.splits // self.split_ratio  # a T-step attends in tiles split < se
            return all(t % self.splits >= se for t in range(ins.start, ins.end))
        return False

    def kind_programs(self, kind: int, rank: int = 0) -> list[list[Instr]]:
        """The programs' records for steps of width code `kind` (1 one position, 2 narrow, 0
        wide; without narrow_merge the narrow and wide steps share one table, that of kind 0),
        Tiling.kind_tables: the records idle in that kind dropped, except one per op (its
        first, in program order) that adds their whole count to the op's counter. The plan's
        own records where kind tables are off."""
        progs = self.programs[rank]
        if not self.kind_tables:
            return progs
        total: dict[int, int] = {}
        first: dict[int, tuple[int, int]] = {}
        for p, prog in enumerate(progs):
            for j, ins in enumerate(prog):
                if self._idle(ins, kind):
                    total[ins.seq] = total.get(ins.seq, 0) + ins.signal
                    first.setdefault(ins.seq, (p, j))
        keep = {pj: seq for seq, pj in first.items()}
        out = []
        for p, prog in enumerate(progs):
            row = []
            for j, ins in enumerate(prog):
                if not self._idle(ins, kind):
                    row.append(ins)
                elif (p, j) in keep:
                    row.append(replace(ins, signal=total[ins.seq]))
            out.append(row)
        return out

    def table(self, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(records int32 [N, RECORD], offsets int32 [P + 1]): program p runs records
        offsets[p]:offsets[p + 1] every step. With kind tables (Plan.kind_tables) one table
        per step kind one after the other (Plan.kinds), offsets [kinds x (P + 1)]: the
        one-position steps' first, then the others' (kind_programs)."""
        kinds = [self.kind_programs(k, rank) for k in self.kinds]
        recs, offs, base = [], [], 0
        for progs in kinds:
            recs += [i.serialize() for p in progs for i in p]
            offs.append(base + np.cumsum([0] + [len(p) for p in progs]))
            base = len(recs)
        recs = recs or [[NOP] + [0] * (RECORD - 1)]
        return np.asarray(recs, dtype=np.int32), np.concatenate(offs).astype(np.int32)

    def last_seq_of_layer(self, layer: int) -> int:
        """Op number of layer `layer`'s last op (DOWN, or its ALLREDUCE): stop there."""
        return max(o.seq for o in self.ops if o.layer == layer)

    def truncated(self, last_seq: int) -> Plan:
        """The same plan cut after op `last_seq` (a step then ends there: no SAMPLE)."""
        progs = [[[i for i in p if i.seq <= last_seq] for p in r] for r in self.programs]
        return replace(self, programs=progs, last_seq=last_seq)

    def describe(self) -> str:
        n = sum(len(p) for p in self.programs[0])
        cost = [sum(i.cost for i in p) for p in self.programs[0]]
        return (f"plan: {self.num_programs} programs x {self.ranks} ranks, T={self.T}, "
                f"{len(self.ops)} ops, {n} instructions, splits={self.splits} "
                f"(T-step {self.t_splits}), bytes/program "
                f"min {min(cost)} max {max(cost)}")


def _spread(costs: list[int], P: int) -> list[tuple[int, int]]:
    """Contiguous runs [lo, hi) of tiles per program, balanced by cost: tile i goes to the
    program whose share of the total holds the middle of tile i's cost."""
    total = sum(costs) or 1
    owner, acc = [], 0
    for c in costs:
        owner.append(min(P - 1, int((acc + c / 2) * P // total)))
        acc += c
    runs = [(0, 0)] * P
    for i, p in enumerate(owner):
        lo, hi = runs[p]
        runs[p] = (i, i + 1) if lo == hi else (lo, i + 1)
    return runs


def plan(cfg: ModelConfig, num_programs: int, T: int, max_len: int, ranks: int = 1,
         tiling: Tiling | None = None, wbytes: int = 2, context: int | None = None,
         mtp: bool = False, fill: bool = False) -> Plan:
    """Instruction lists for `num_programs` persistent programs per rank, T positions per step,
    KV capacity `max_len`. `wbytes`: bytes per weight; `context`: typical KV length, for the
    cost of attention tiles (default max_len / 2); `mtp`: an MTP module's ops after SAMPLE
    (one rank); `fill` (with mtp): the module's ops alone, each step over T positions of a
    prompt whose main hidden states are known (its K/V before a decode: MTP_EH, the module's
    layer, FILL_NEXT)."""
    tl_ = tiling or Tiling()
    P, R = num_programs, ranks
    h, hd, nh, nkv, inter = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads,
                             cfg.intermediate_size)
    assert P >= 1 and 1 <= T <= 16, f"programs {P} >= 1 and 1 <= T={T} <= 16"
    assert T == 1 or tl_.bn_lm_t >= 16, "T > 1 uses tl.dot: LM-head tiles of >= 16 rows"
    assert nkv % R == 0 and inter % R == 0, f"{R} ranks must divide kv heads and FFN width"
    assert tl_.cand & (tl_.cand - 1) == 0, "the candidate cap is a power of two"
    b0 = tl_.attn_block_t0
    assert b0 == 0 or (b0 >= 16 and b0 & (b0 - 1) == 0), "attn_block_t0: 0 or a power of 2 >= 16"
    assert tl_.merge_elems == 0 or tl_.merge_elems >= 1024, "merge_elems: 0 or >= 1024"
    assert tl_.stages >= 1 and min(tl_.stages_qkv, tl_.stages_om, tl_.stages_gu,
                                   tl_.stages_dn) >= 0, "stages >= 1; per-op stage caps 0 or >= 1"
    assert tl_.attn_stages >= 1 and tl_.attn_stages_one >= 0, (
        "attn_stages >= 1; attn_stages_one 0 (by head_dim) or >= 1")
    assert not mtp or R == 1, "an MTP module runs on one rank"
    assert not fill or (mtp and T > 1), "a module fill: mtp=True, T > 1 positions a step"
    om_ok = R == 1 and not tl_.bk and (T == 1 or tl_.one_tiles)
    om = om_ok if tl_.oproj_merge is None else bool(tl_.oproj_merge)
    assert not om or om_ok, "oproj_merge: one rank, whole-row tiles (bk 0), T = 1 tiles"
    nkv_r, nh_r, i_r = nkv // R, nh // R, inter // R
    if not tl_.attn_block:
        tl_ = replace(tl_, attn_block=attn_block(cfg.head_dim, T, wbytes, wait_loop(tl_, om)))
    blocks = math.ceil(max_len / tl_.attn_block)
    # KV splits per kv head: 32 at most at T = 1, and no more than the merging program loads
    # in one round (GP x splits x head_dim <= 8192, ops_attn._merge); 8 when T > 1 (each
    # split's partials are T rows; merging 32 of them made the merging program twice the
    # median: H200, SmolLM2, T = 4 step 1,133 us with 32 splits, 1,068 with 8, 1,162 with 4).
    # H200, ctx 1024 / 4096, us per step, 32 -> 16 splits: Qwen3-8B (GP 4, head_dim 128)
    # 4,277 -> 4,125 / 4,400 -> 4,292; Qwen3-1.7B (GP 2) 1,349 -> 1,361 / 1,431 -> 1,484
    # (bench/results/monokernel-20261130-s11, run 3)
    # A plan of T > 1 has the T = 1 count of ATTN tiles per kv head, the first t_splits of
    # which compute a split in a T-position step (the others exit without waiting): a
    # one-position step of that kernel (per-step switching, weights.STEP_ONE) then attends as a
    # T = 1 kernel does. H200, SmolLM2, ctx 1024, us per step, T = 4 kernel: one-position steps
    # 613 with 8 tiles per kv head, 572 with 32 (T = 1 kernel 567); its T = 4 steps 836 with 8
    # tiles, 822 with 32 (848 with every 4th tile a split); all 32 tiles as splits: 891-918
    # (bench/results/monokernel-20261130-s12)
    one_round = _pow2_floor(max(1, (tl_.merge_elems or 8192)
                                // (_pow2_ceil(nh_r // nkv_r) * cfg.head_dim)))
    per_prog = 1 << max(0, (P // nkv_r).bit_length() - 1)
    splits = tl_.attn_splits or max(1, min(32, one_round, blocks, per_prog))
    t_splits = splits
    if T > 1:
        t_splits = tl_.attn_splits_t or (tl_.attn_splits or max(1, min(8, blocks, per_prog)))
        if splits % t_splits:
            splits = t_splits
    ctx = context or max_len // 2
    q, kv = cfg.q_size, cfg.kv_size
    g = cfg.group_size
    shapes = {QKV: ((nh_r + 2 * nkv_r) * hd, h, False), OPROJ: (h, nh_r * hd, False),
              GATEUP: (i_r, h, True), DOWN: (h, i_r, False)}
    def mv_blocks(t: int) -> tuple[dict, dict]:
        """Per matvec op, for steps of t positions: its FMA blocks (None: not on that path)
        and its (BN, BK)."""
        fma = {op: fma_t_blocks(rows, k, P, t, tl_, gated)
               for op, (rows, k, gated) in shapes.items()}
        return fma, {op: fma[op] or block_sizes(rows, k, P, t, tl_, gated=gated, whole_k=True)
                     for op, (rows, k, gated) in shapes.items()}

    fma_t, mv = mv_blocks(T)
    blocks = {**mv, LMHEAD: block_sizes(cfg.vocab_size // R, h, P, T, tl_,
                                        bn=tl_.bn_lm if T == 1 else tl_.bn_lm_t)}
    if mtp:  # the module's input projection: whole-row T = 1 tiles over K = 2H
        blocks[MTP_EH] = block_sizes(h, 2 * h, P, 1, tl_, whole_k=True)
    blocks_t = dict(blocks)
    if T > 1 and tl_.one_tiles:  # records in T = 1 tiles; blocks_t walks them in T-steps
        blocks.update(mv_blocks(1)[1])
    if om:  # O-proj with the merge (one position): whole-row tiles of a kv head's columns
        blocks[OPROJ_M] = block_sizes(h * nkv, g * hd, P, 1, tl_, whole_k=True)
    nw = tl_.narrow
    assert nw == 0 or 1 < nw < T, f"narrow steps of {nw} positions in a T = {T} plan"
    fma_n, blocks_n = mv_blocks(nw) if nw else ({}, {})
    # O-proj merging the narrow steps' splits: their gate/up and down on the FMA path (which
    # reads `part`), the partials of a kv head's group and the narrow positions in one round
    one_t = _pow2_ceil(g) * _pow2_ceil(t_splits) * _pow2_ceil(max(nw, 1)) * hd
    nm_ok = (om and T > 1 and nw == 2 and fma_n.get(GATEUP) is not None
             and fma_n.get(DOWN) is not None and one_t <= merge_round(tl_, T, hd))
    nm = nm_ok if tl_.narrow_merge is None else bool(tl_.narrow_merge)
    assert not nm or nm_ok, ("narrow_merge: oproj_merge, narrow steps of 2 positions with "
                             "gate/up and down on the FMA path, a kv head's partials in one round")

    ops: list[OpInfo] = []
    progs: list[list[list[Instr]]] = [[[] for _ in range(P)] for _ in range(R)]

    def add(opcode: int, layer: int, rank_rows, bn: int, row_bytes: int, make) -> None:
        """rank_rows(r) -> row ranges [(lo, hi)]; make(r, lo, hi) -> extra fields."""
        seq = len(ops)
        for r in range(R):
            # tiles, and the range each comes from (a run of tiles never spans two ranges)
            tiles, rng = [], []
            for i, (lo, hi) in enumerate(rank_rows(r)):
                for t in range(math.ceil((hi - lo) / bn)):
                    tiles.append((lo + t * bn, min(hi, lo + (t + 1) * bn)))
                    rng.append(i)
            if r == 0:
                ops.append(OpInfo(seq, opcode, layer, len(tiles)))
            prev = ops[seq - 1] if seq else None
            for p, (a, b) in enumerate(_spread([(hi - lo) * row_bytes for lo, hi in tiles], P)):
                while a < b:  # one instruction per contiguous stretch of rows
                    c = a + 1
                    while c < b and tiles[c][0] == tiles[c - 1][1] and rng[c] == rng[a]:
                        c += 1
                    lo, hi = tiles[a][0], tiles[c - 1][1]
                    cls, kw = make(r, lo, hi)
                    progs[r][p].append(cls(
                        seq=seq, layer=layer, start=lo, end=hi,
                        wait_seq=prev.seq if prev else -1, wait_count=prev.tiles if prev else 0,
                        wait_prev=False, signal=c - a, cost=(hi - lo) * row_bytes, **kw))
                    a = c

    def layer_ops(layer: int) -> None:
        def qkv_rows(r):  # this rank's q heads, k heads, v heads (one range when R == 1)
            rows = [(r * nh_r * hd, (r + 1) * nh_r * hd),
                    (q + r * nkv_r * hd, q + (r + 1) * nkv_r * hd),
                    (q + kv + r * nkv_r * hd, q + kv + (r + 1) * nkv_r * hd)]
            merged = [rows[0]]
            for lo, hi in rows[1:]:
                if merged[-1][1] == lo:
                    merged[-1] = (merged[-1][0], hi)
                else:
                    merged.append((lo, hi))
            return merged

        add(QKV, layer, qkv_rows, blocks[QKV][0], h * wbytes, lambda r, lo, hi: (Qkv, {}))
        add(ATTN, layer, lambda r: [(r * nkv_r * splits, (r + 1) * nkv_r * splits)], 1,
            2 * hd * wbytes * math.ceil(ctx / splits), lambda r, lo, hi: (Attn, {}))
        if om:  # (kv head k, rows): rows numbered k * h + row, over the group's columns
            add(OPROJ_M, layer, lambda r: [(k * h, (k + 1) * h) for k in range(nkv)],
                blocks[OPROJ_M][0], g * hd * wbytes,
                lambda r, lo, hi: (OProjMerge, dict(k0=lo // h * g * hd,
                                                    k1=(lo // h + 1) * g * hd)))
        if not om or T > 1:
            add(OPROJ, layer, lambda r: [(0, h)], blocks[OPROJ][0], nh_r * hd * wbytes,
                lambda r, lo, hi: (OProj, dict(k0=r * nh_r * hd, k1=(r + 1) * nh_r * hd,
                                               partial=R > 1)))
        alt = ops[-2] if om and T > 1 else None  # one-position steps: GATEUP waits for OPROJ_M
        if R > 1:
            add(ALLREDUCE, layer, lambda r: [(0, h)], h, h * 4 * R,
                lambda r, lo, hi: (AllReduce, dict(bias=cfg.o_bias)))
        add(GATEUP, layer, lambda r: [(r * i_r, (r + 1) * i_r)], blocks[GATEUP][0],
            2 * h * wbytes,
            lambda r, lo, hi: (GateUp, dict(alt_seq=alt.seq, alt_count=alt.tiles) if alt
                               else {}))
        add(DOWN, layer, lambda r: [(0, h)], blocks[DOWN][0], i_r * wbytes,
            lambda r, lo, hi: (Down, dict(k0=r * i_r, k1=(r + 1) * i_r, partial=R > 1)))
        if R > 1:
            add(ALLREDUCE, layer, lambda r: [(0, h)], h, h * 4 * R,
                lambda r, lo, hi: (AllReduce, dict(bias=False)))

    L = cfg.num_layers

    def module_ops() -> None:  # the MTP module: its input projection and layer (layer L)
        add(MTP_EH, L, lambda r: [(0, h)], blocks[MTP_EH][0], 2 * h * wbytes,
            lambda r, lo, hi: (MtpEh, {}))
        layer_ops(L)

    def last_op(opcode: int, cls, cost: int) -> None:  # one instance, on the last program
        seq = len(ops)
        ops.append(OpInfo(seq, opcode, L, 1))
        progs[0][P - 1].append(cls(seq=seq, layer=L, start=0, end=1, wait_seq=seq - 1,
                                   wait_count=ops[seq - 1].tiles, wait_prev=False, signal=1,
                                   cost=cost))

    def lm_and_sample() -> None:  # the LM head, SAMPLE; the module, its head, its draft
        slots = [0] * R

        def lm_make(r, lo, hi):
            slots[r] += 1
            return LmHead, dict(slot=slots[r] - 1)

        add(LMHEAD, -1, lambda r: [(0, cfg.vocab_size)], blocks[LMHEAD][0], h * wbytes,
            lm_make)
        seq = len(ops)
        ops.append(OpInfo(seq, SAMPLE, -1, 1))
        for r in range(R):  # the last program samples
            progs[r][P - 1].append(Sample(seq=seq, layer=-1, start=0, end=1, wait_seq=seq - 1,
                                          wait_count=ops[seq - 1].tiles, wait_prev=False,
                                          signal=1, cost=cfg.vocab_size * 4 * T))
        if mtp:
            module_ops()
            add(LMHEAD, L, lambda r: [(0, cfg.vocab_size)], blocks[LMHEAD][0], h * wbytes,
                lambda r, lo, hi: (LmHead, dict(slot=0)))
            last_op(MTP_SAMPLE, MtpSample, cfg.vocab_size // tl_.bn_lm * 8)

    if fill:  # the module alone, then the next T positions
        module_ops()
        last_op(FILL_NEXT, FillNext, 0)
    else:
        for layer in range(cfg.num_layers):
            layer_ops(layer)
        lm_and_sample()
    end = len(ops) - 1
    # the first op of a step waits for the previous step's last op (SAMPLE, MTP_SAMPLE or
    # FILL_NEXT)
    for r in range(R):
        for p in progs[r]:
            p[:] = [replace(i, wait_seq=end, wait_count=1, wait_prev=True) if i.seq == 0 else i
                    for i in p]
    return Plan(cfg, P, T, max_len, R, tl_, splits, ops, progs, blocks, blocks_t, wbytes,
                last_seq=end, mtp=mtp, fill=fill, oproj_merge=om, narrow_merge=nm,
                fma_t=frozenset(op for op, b in fma_t.items() if b is not None),
                t_splits=t_splits, blocks_n=blocks_n,
                fma_n=frozenset(op for op, b in fma_n.items() if b is not None))

