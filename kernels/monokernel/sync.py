"""Synchronization helpers of the monokernel (Triton device functions): bounded waits on
dependency counters, release, error records.

Measured on an H200 (shared/probes/barrier2.py): thread 0 polling with inline PTX
`ld.acquire.gpu` (+ nanosleep) and then a CTA barrier is the cheapest wait (~1 us per grid-wide
sync); all threads polling with volatile loads costs 1.2-2.4 us. That path needs CUDA; HIP and
the CPU interpreter take the portable path (an acquire atomic in a loop). An acquire completes
only after the cp.async copies its warp has in flight (bench/probes/poll_behind, H200: 1.38 us
with 64 KB per SM in flight, 0.45 us for a relaxed load), so a matvec's wait answers once the
tiles requested before it have landed. Not avoidable here: a relaxed poll leaves the data loads
unordered (a GPU test failed), a fence after it waits the same, TMA tiles (which the acquire does
not wait for) stream slower in Triton (BENCH.md, session 26). Every wait is bounded
by `cap` iterations and gives up early once another program has recorded an error (CUDA: seen
within 32 polls); on expiry it records [ERR_WAIT, record, seq, wait_seq, target, seen, program,
step] (first error wins).
Knows nothing about what the counters guard.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import weights as W

ERR_WAIT = tl.constexpr(W.ERR_WAIT)
ERR_LL = tl.constexpr(W.ERR_LL)
LOW32 = tl.constexpr(0xFFFFFFFF)
NSTAMP = tl.constexpr(8)  # timeline slots per record: start, waited, marks 2-6, released

# One poll of the counter per iteration (an L2 round trip); the error word, which only ends a
# wait early once another program has failed, every 32nd poll (reading it each time made
# every poll two dependent round trips: the median waiter saw a release 0.5-0.65 us after it,
# 0.3 at best, H200 timeline of session 13, BENCH.md session 19)
_SPIN = tl.constexpr("""{
    .reg .pred p, q;
    .reg .u32 t, n, m;
    .reg .s32 v, e;
    mov.b32 $0, 1;
    mov.u32 t, %tid.x;
    setp.ne.u32 p, t, 0;
    @p bra DONE${:uid};
    mov.u32 n, 0;
    SPIN${:uid}:
    ld.acquire.gpu.global.s32 v, [$1];
    setp.ge.s32 q, v, $2;
    @q bra DONE${:uid};
    add.u32 n, n, 1;
    setp.ge.u32 q, n, $4;
    @q bra FAIL${:uid};
    and.b32 m, n, 31;
    setp.ne.u32 q, m, 0;
    @q bra SLEEP${:uid};
    ld.relaxed.gpu.global.s32 e, [$3];
    setp.ne.s32 q, e, 0;
    @q bra FAIL${:uid};
    SLEEP${:uid}:
    nanosleep.u32 20;
    bra SPIN${:uid};
    FAIL${:uid}:
    mov.b32 $0, 0;
    DONE${:uid}:
    }""")


@triton.jit
def wait(ctr_ptr, target, err_ptr, cap, rec, seq, wseq, pid, step, NW: tl.constexpr,
         USE_PTX: tl.constexpr):
    """Until *ctr_ptr >= target (acquire). Returns 1, or 0 after `cap` polls / an abort.
    CUDA: thread 0 polls (one lane per thread, NW warps) and its verdict reaches every thread
    through a CTA reduction, whose barrier (shared memory across warps) also orders their later
    loads after the acquire. No explicit barrier: one inside a loop stops Triton's pipeliner
    (ops_mv.mv_tiles waits in its loop's first iteration)."""
    if USE_PTX:
        z = tl.zeros((32 * NW,), tl.int32)
        flags = tl.inline_asm_elementwise(_SPIN, "=r,l,r,l,r", [ctr_ptr + z, target + z,
                                                               err_ptr + z, cap + z],
                                          dtype=tl.int32, is_pure=False, pack=1)
        ok = tl.min(flags, axis=0)
    else:
        seen = tl.atomic_add(ctr_ptr, 0, sem="acquire", scope="gpu")
        n = 0
        while (seen < target) & (n < cap):
            seen = tl.atomic_add(ctr_ptr, 0, sem="acquire", scope="gpu")
            n += 1
            if tl.load(err_ptr, volatile=True) != 0:
                n = cap
        ok = (seen >= target).to(tl.int32)
    if ok == 0:
        record_error(err_ptr, ERR_WAIT, rec, seq, wseq, target,
                     tl.load(ctr_ptr, volatile=True), pid, step)
    return ok


@triton.jit
def record_error(err_ptr, code, rec, seq, wseq, target, seen, pid, step):
    """err = [code, record, seq, wait seq, target, seen, program, step], the first error
    only."""
    if tl.atomic_cas(err_ptr, 0, code) == 0:
        tl.store(err_ptr + 1, rec)
        tl.store(err_ptr + 2, seq)
        tl.store(err_ptr + 3, wseq)
        tl.store(err_ptr + 4, target)
        tl.store(err_ptr + 5, seen)
        tl.store(err_ptr + 6, pid)
        tl.store(err_ptr + 7, step)


# Words that carry their own flag (NCCL's LL protocol; Tiling.qkv_ll): an fp32 value in the low
# half of an int64, the tag of the step and layer that wrote it in the high half. One 8-byte
# store is seen whole or not at all, so a reader that polls the words themselves needs no
# counter, no acquire and no fence on the writer's side: a word with the expected tag is the
# value. Tags are >= 1 and the words are zeroed per launch.
@triton.jit
def ll_pack(y, tag):
    """fp32 y -> words (tag << 32) | bits(y)."""
    bits = y.to(tl.int32, bitcast=True).to(tl.int64) & LOW32
    return (tag.to(tl.int64) << 32) | bits


@triton.jit
def ll_value(w):
    """The fp32 values of words."""
    return (w & LOW32).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def ll_missing(w, tag):
    """Per word: it does not carry `tag` (yet)."""
    return (w >> 32) != tag


@triton.jit
def ll_seen(w, m):
    """The oldest tag among the words `w` under mask `m` (an error record's `seen`)."""
    return tl.min(tl.min(tl.where(m, w >> 32, 1 << 30), axis=1), axis=0).to(tl.int32)


@triton.jit
def now(USE_PTX: tl.constexpr):
    """The GPU's global nanosecond timer (the same clock on every SM); 0 without PTX."""
    if USE_PTX:
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                      is_pure=False, pack=1)
    else:
        t = tl.zeros((), tl.int64)
    return t


@triton.jit
def stamp(slot, on, USE_PTX: tl.constexpr):
    """Timeline trace (tune.py --timeline): *slot = now() when `on`."""
    if on != 0:
        tl.store(slot, now(USE_PTX))


@triton.jit
def mark(sy, k: tl.constexpr, dep, USE_PTX: tl.constexpr):
    """Timeline phase mark k (2-6) of the record `sy` describes: the time once the scalar `dep`
    (computed from the phase's results) exists, so the mark waits for the loads it needs.
    Compiles away unless tracing (sy[11] is then the constant 0)."""
    if sy[11] != 0:  # noqa: SIM102 (constexpr 0 when not tracing: one condition would not fold)
        if dep != -1.2345e-30:
            tl.store(sy[10] + k, now(USE_PTX))


@triton.jit
def wait_args(sy, NW: tl.constexpr, USE_PTX: tl.constexpr):
    """wait() with its arguments in one tuple: (counter pointer, target, err, cap, record, seq,
    wait seq, program, step, run, trace slot, tracing); `run` (0: compute skipped, timing
    variants) rides along for the ops that wait themselves after requesting their first
    weights; when tracing, the time the wait ended goes to trace slot + 1."""
    ok = wait(sy[0], sy[1], sy[2], sy[3], sy[4], sy[5], sy[6], sy[7], sy[8], NW, USE_PTX)
    stamp(sy[10] + 1, sy[11], USE_PTX)
    return ok


@triton.jit
def release(ctr_ptr, n):
    """After this program's stores: counter += n (release, one thread after a CTA barrier)."""
    tl.debug_barrier()
    tl.atomic_add(ctr_ptr, n, sem="release", scope="gpu")


@triton.jit
def release_idle(ctr_ptr, n):
    """counter += n for a record that did nothing this step (an op that does not run in this
    step kind: OPROJ in a one-position step where OPROJ_M merged, OPROJ_M in the others, an
    MTP module's ops in a step without it): it stored nothing, so nothing needs ordering before
    the add: relaxed, no CTA barrier, no fence (a release's fence waits for the program's
    memory operations to complete: ~1 us on the program's path to its next record)."""
    tl.atomic_add(ctr_ptr, n, sem="relaxed", scope="gpu")
