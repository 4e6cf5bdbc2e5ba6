"""Probe: does a completion counter's fan-in cost a monokernel wait? Every op of the monokernel
ends with each of its ~264 programs adding to one counter (release) and the next op polling it
(thread 0, ld.acquire.gpu, then a CTA barrier): a grid barrier per op. Here that barrier runs
alone, n times in a row, with the count spread over C counters (producer: cnt[c = program % C],
each on its own 128-byte line; consumer: lanes 0..C-1 of warp 0 each poll one with
ld.acquire.gpu, summed across the warp by shuffles) against C = 1 polled by thread 0 (the
kernel's wait today). Prints us per barrier; JSON to $OUT/fanin.json.
Usage: python bench/probes/fanin/fanin.py [rounds]"""
import json
import os
import sys
import time

import torch
import triton
import triton.language as tl

STRIDE = 32  # int32s between counters: 128 bytes, one line each


@triton.jit
def _poll(cnt, target, C: tl.constexpr, NW: tl.constexpr):
    z = tl.zeros((32 * NW,), tl.int32)
    if C == 1:
        tl.inline_asm_elementwise("""{
            .reg .pred p, q;
            .reg .u32 t;
            .reg .s32 v;
            mov.u32 t, %tid.x;
            setp.ne.u32 p, t, 0;
            @p bra DONE${:uid};
            SPIN${:uid}:
            ld.acquire.gpu.global.s32 v, [$1];
            setp.lt.s32 q, v, $2;
            @q nanosleep.u32 20;
            @q bra SPIN${:uid};
            DONE${:uid}:
            mov.b32 $0, 0;
            }""", "=r,l,r", [cnt + z, target + z], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise("""{
            .reg .pred p, q;
            .reg .u32 t;
            .reg .u64 a, o64;
            .reg .s32 v, w;
            mov.u32 t, %tid.x;
            setp.ge.u32 p, t, 32;
            @p bra DONE${:uid};
            mul.wide.u32 o64, t, 128;
            add.s64 a, $1, o64;
            setp.lt.u32 p, t, $3;
            SPIN${:uid}:
            mov.s32 v, 0;
            @p ld.acquire.gpu.global.s32 v, [a];
            shfl.sync.bfly.b32 w, v, 16, 31, -1;
            add.s32 v, v, w;
            shfl.sync.bfly.b32 w, v, 8, 31, -1;
            add.s32 v, v, w;
            shfl.sync.bfly.b32 w, v, 4, 31, -1;
            add.s32 v, v, w;
            shfl.sync.bfly.b32 w, v, 2, 31, -1;
            add.s32 v, v, w;
            shfl.sync.bfly.b32 w, v, 1, 31, -1;
            add.s32 v, v, w;
            setp.lt.s32 q, v, $2;
            @q nanosleep.u32 20;
            @q bra SPIN${:uid};
            DONE${:uid}:
            mov.b32 $0, 0;
            }""", "=r,l,r,r", [cnt + z, target + z, C + z], dtype=tl.int32, is_pure=False,
            pack=1)
    tl.debug_barrier()


@triton.jit
def barriers(cnt, n, NPROG: tl.constexpr, C: tl.constexpr, NW: tl.constexpr):
    pid = tl.program_id(0)
    for i in range(n):
        base = cnt + i * (C * 32)
        tl.debug_barrier()
        tl.atomic_add(base + (pid % C) * 32, 1, sem="release", scope="gpu")
        _poll(base, NPROG, C, NW)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    res = {"gpu": torch.cuda.get_device_name(0), "rounds": rounds}
    for per_sm in (1, 2):
        nprog = nsm * per_sm
        for C in (1, 2, 4, 8, 16, 32):
            cnt = torch.zeros(rounds * C * STRIDE, device="cuda", dtype=torch.int32)
            best = None
            for _ in range(3):
                cnt.zero_()
                torch.cuda.synchronize()
                t = time.perf_counter()
                barriers[(nprog,)](cnt, rounds, NPROG=nprog, C=C, NW=4, num_warps=4)
                torch.cuda.synchronize()
                us = (time.perf_counter() - t) / rounds * 1e6
                best = us if best is None else min(best, us)
            tot = cnt.view(rounds, C, STRIDE)[:, :, 0].sum(1)
            assert bool((tot == nprog).all()), "a barrier's count is wrong"
            res[f"p{nprog}_C{C}_us"] = round(best, 3)
            print(f"programs {nprog} counters {C}: {best:.3f} us per barrier", flush=True)
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "fanin.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
