"""Registers and spills of the monokernel for an H200 (sm_90), compiled on a CPU machine.

The lent H200 runs triton 3.6; a compile there reports `fit` (registers, spills) in tune's JSON.
With triton 3.6 installed here (its wheel bundles ptxas), the same kernel compiles offline and its
stack frame matches the device's spill count (BENCH.md, session 18):
    python bench/probes/offline_fit/fit.py --shape smollm2-135m --T 16 \
        --variants "narrow=2;narrow=2,oproj_merge=1"
prints per variant the registers per thread, the stack frame (spill space, bytes), the SASS
local loads / stores (spill traffic) and the functions that hold them (`functions`: the kernel's
body first, then the noinline ops, told apart by what they contain: HMMA and MUFU.EX2 in the
attention, atomics). Variants take tune's keys (Tiling fields); greedy, bf16.
FIT_SASS=path saves the machine code (the noinline ops are functions inside the one SASS section
_monokernel: find them by their RET and what they contain); FIT_TTGIR=path saves Triton's GPU IR
(async_copy_global_to_local: the loads the pipeliner turned into copies ahead).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ["TRITON_INTERPRET"] = "0"


def functions(sass: str) -> list[dict]:
    """The machine code cut into its functions (the kernel's body, then each noinline op, each
    ending with RET): per function its first address, instructions, local loads / stores
    (spill traffic), HMMA (tensor-core dots), MUFU.EX2 (softmax), atomics and reductions."""
    out, cur = [], None
    for addr, ins in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass):
        if cur is None:
            cur = {"at": addr, "instructions": 0, "ldl": 0, "stl": 0, "hmma": 0, "ex2": 0,
                   "atomics": 0}
        cur["instructions"] += 1
        cur["ldl"] += bool(re.search(r"\bLDL\b", ins))
        cur["stl"] += bool(re.search(r"\bSTL\b", ins))
        cur["hmma"] += "HMMA" in ins
        cur["ex2"] += "MUFU.EX2" in ins
        cur["atomics"] += bool(re.search(r"\b(ATOM|ATOMG|RED)\b", ins))
        if re.search(r"\bRET\b", ins):
            out.append(cur)
            cur = None
    return out + ([cur] if cur else [])


def compile_fit(shape: str, T: int, variant: dict, programs: int = 264) -> dict:
    import triton

    from agentfast.engine.bench.models import SHAPES
    from agentfast.kernels.monokernel import codegen
    from agentfast.kernels.monokernel import plan as P
    from agentfast.kernels.monokernel.tune import TILING_KEYS

    cfg = SHAPES[shape]
    tiling = P.Tiling(**{k: variant[k] for k in TILING_KEYS if k in variant})
    p = P.plan(cfg, programs, T, 4096, tiling=tiling, context=1024)
    k = codegen.compile_kernel(p, "bf16")  # (the kernel's signature and constants)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", res)
    funcs = functions(sass)
    if os.environ.get("FIT_SASS"):  # the machine code, for reading where the spills are
        with open(os.environ["FIT_SASS"], "w") as f:
            f.write(sass)
    if os.environ.get("FIT_TTGIR"):  # Triton's GPU IR: which loads the pipeliner made copies
        with open(os.environ["FIT_TTGIR"], "w") as f:
            f.write(k.asm["ttgir"])
    return {"triton": triton.__version__, "shape": shape, "T": T, "variant": variant,
            "registers": int(m.group(1)) if m else None, "stack": int(m.group(2)) if m else None,
            "local_loads": len(re.findall(r"\bLDL\b", sass)),
            "local_stores": len(re.findall(r"\bSTL\b", sass)),
            "code_bytes": max((int(a, 16) for a in re.findall(r"/\*([0-9a-f]{4,})\*/", sass)),
                              default=0),
            "shared": k.metadata.shared,
            # where the spill traffic is: the functions with local loads or stores
            "spilling_functions": [f for f in funcs if f["ldl"] or f["stl"]],
            "functions": len(funcs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--T", type=int, default=1)
    ap.add_argument("--variants", default="")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # (a child process: one variant, JSON)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(compile_fit(args.shape, args.T, json.loads(args.one))))
        return
    from agentfast.kernels.monokernel.tune import parse_variant

    variants = [parse_variant(s) for s in args.variants.split(";")] if args.variants else [{}]
    for v in variants:  # one process each: Triton's caches stay small
        out = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--T",
                              str(args.T), "--one", json.dumps(v)], capture_output=True,
                             text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0
              else f"{v}: failed\n{out.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
