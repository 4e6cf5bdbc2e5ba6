"""What the monokernel compiles to for an H200, on a machine without a GPU: registers, spills,
shared memory, and per op function what runs after its wait.

    python -m agentfast.kernels.monokernel.codegen --shape llama-3.2-1b [--T 1] \\
        [--set attn_new_last=0,norm_early=1] [--programs 264] [--max-len 4096]

triton.compile for GPUTarget("cuda", 90, 32) (the H200's sm_90) with the kernel's real signature
and constants (kernel.Monokernel's, from a plan of the shape), the interpreter off. The chain a
hand-over pays is what an op does between its wait and its first weight tile: every load there is
a dependent round trip, every layout conversion of a distributed tensor a trip through shared
memory with a CTA barrier. `after_waits` lists those operations per op function, read from the
TTGIR (Triton's last IR before LLVM, where the layouts are explicit); session 35 found the
attention blocks' register round trip and the RMSNorm weights' late load this way (BENCH.md).
Compiled with the triton installed here, which may be newer than the GPU machine's (3.6 on the
lent H200): its layouts and register counts can differ from what runs there (tune reports the
device's own). Knows nothing about timing: that is tune.py's, on a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from types import SimpleNamespace

# pointer and scalar types of _monokernel's arguments (the others are fp32 pointers); the weight
# and activation buffers take the weights' type
_WEIGHT_ARGS = ("x", "hidden", "attn", "act", "w_qkv", "w_o", "w_gu", "w_down", "embed",
                "lm_head", "k_cache", "v_cache")
_TYPES = {"qkv_ll": "*i64", "cand": "*i64", "instr": "*i32", "offs": "*i32", "ctr": "*i32",
          "err": "*i32", "state": "*i32", "tokens": "*i32", "stop_ids": "*i32",
          "drafts": "*i32", "host": "*i32", "lm_idx": "*i32", "c_bitmask": "*i32",
          "c_default": "*i32", "c_exc_ptr": "*i32", "c_exc_tokens": "*i32",
          "c_exc_next": "*i32", "c_done": "*i1", "hist": "*i32", "c_forced": "*i32",
          "nsteps": "i32", "spin_cap": "i32", "eps": "fp32", "qk_scale": "fp32", "kv_cap": "i32",
          "window": "i32", "skip": "i32", "trace": "*i64", "trace_step": "i32",
          "trace_rows": "i32"}


def compile_kernel(plan, weights: str = "bf16", sampling: bool = False, target: str = "cuda"):
    """The kernel of `plan` compiled for the H200 (target "cuda": sm_90, the PTX waits) or the
    MI300X ("hip": gfx942, the portable waits), weights in `weights` ("bf16" / "fp32"). Needs
    TRITON_INTERPRET unset or 0 in this process (tests run it in a child process)."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernel as K

    cfg = plan.cfg
    dt = torch.bfloat16 if weights == "bf16" else torch.float32
    fake = SimpleNamespace(w_qkv=torch.empty(0, dtype=dt), b_qkv=1 if cfg.qkv_bias else None,
                           b_o=1 if cfg.o_bias else None, q_norm=1 if cfg.qk_norm else None)
    mk = K.Monokernel(plan, fake)  # only for its constants
    consts = {**mk.consts, "SAMPLING": sampling, "USE_PTX": target == "cuda",
              "IEEE": weights == "fp32"}
    w_ty = "*bf16" if weights == "bf16" else "*fp32"
    types = {**{n: w_ty for n in _WEIGHT_ARGS}, **_TYPES}
    fn = K._monokernel
    sig = {a.name: "constexpr" if a.is_constexpr else types.get(a.name, "*fp32")
           for a in fn.params}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.params)
             if sig[a.name].startswith("*")}
    gpu = GPUTarget("cuda", 90, 32) if target == "cuda" else GPUTarget("hip", "gfx942", 64)
    return triton.compile(ASTSource(fn, sig, consts, attrs), target=gpu,
                          options={"num_warps": 4, "num_stages": 1})


def resources(cubin: bytes) -> dict:
    """Registers per thread, stack and local (spill) bytes, from cuobjdump (bundled with
    triton); {} where the tool is missing."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    loc = re.search(r"LOCAL:(\d+)", out)
    if not m:
        return {}
    return {"registers": int(m.group(1)), "stack": int(m.group(2)),
            "local": int(loc.group(1)) if loc else 0}


# TTGIR operations that cost a wake its time, by the name after_waits gives them
_KINDS = (("ttg.convert_layout", "convert"), ("ttg.local_alloc", "to_shared"),
          ("ttg.local_load", "from_shared"), ('"tt.reduce"', "reduce"), ("tt.load", "load"),
          ("ttg.async_wait", "tile"), ("tt.dot", "dot"), ("tt.atomic", "atomic"),
          ("tt.store", "store"))
_FUNC = re.compile(r"tt\.func private @agentfast\.kernels\.monokernel\.(\w+)\.(\w+?)__")
_SHAPE = re.compile(r"tensor<([0-9x]+)x[a-z!]")


def _depths(lines: list[str]) -> list[int]:
    """The region depth of each line (a line that closes a region counts outside it)."""
    out, d = [], 0
    for ln in lines:
        s = ln.strip()
        if s.startswith("}"):
            d -= 1
        out.append(d)
        if s.endswith("{"):
            d += 1
    return out


def _close(lines: list[str], depth: list[int], i: int) -> int:
    """The line that closes the region line i opens (the last line if none does)."""
    for j in range(i + 1, len(lines)):
        if lines[j].strip().startswith("}") and depth[j] == depth[i]:
            return j
    return len(lines) - 1


def _ops_after_wait(lines: list[str], until_tile: bool) -> list[str]:
    """after_waits for one function's lines."""
    depth = _depths(lines)
    skip = [False] * len(lines)
    for a, ln in enumerate(lines):  # a failed wait's error record: the branch that holds it
        if "tt.atomic_cas" in ln:
            opener = max((i for i in range(a) if "scf.if" in lines[i] and depth[i] < depth[a]
                          and _close(lines, depth, i) > a), default=None)
            if opener is not None:
                for j in range(opener, _close(lines, depth, opener) + 1):
                    skip[j] = True
    end = None  # the wait's last line: the poll's verdict (a reduction), or the tagged words'
    # polling loop
    for i, ln in enumerate(lines):
        if "tt.elementwise_inline_asm" in ln and "ld.acquire" in ln:
            j = next((j for j in range(i + 1, len(lines)) if '"tt.reduce"' in lines[j]), i)
            end = _close(lines, depth, j) if j > i else i
            break
        if "isVolatile = true" in ln and "tensor<" in ln and not skip[i]:
            w = next((j for j in range(i + 1, len(lines)) if "scf.while" in lines[j]), None)
            if w is not None:
                do = _close(lines, depth, w)  # "} do {"
                end = _close(lines, depth, do)
            break
    if end is None:
        return []
    ops = ["wait"]
    for ln, sk in zip(lines[end + 1:], skip[end + 1:], strict=True):
        if sk:
            continue
        for key, kind in _KINDS:
            if key in ln:
                if until_tile and kind == "tile":
                    return ops
                sh = _SHAPE.search(ln)
                ops.append(f"{kind}:{sh.group(1)}" if sh else kind)
                break
    return ops


def after_waits(ttgir: str, until_tile: bool = True) -> dict[str, list[str]]:
    """Per op function (by its Python name; a name compiled twice gets #2, ...), the operations
    after its wait (the polling inline asm's verdict, or the loop that polls tagged words), as
    "kind" or "kind:shape" (load:2048, convert:4x64, to_shared:16x64, ...); with `until_tile`,
    up to the first weight tile read from the pipeliner's buffers (an async wait). A failed
    wait's error record (the branch with its atomic) is left out. Scalars have no shape."""
    out: dict[str, list[str]] = {}
    name, body = None, []
    for line in ttgir.splitlines() + ["tt.func private @agentfast.kernels.monokernel.x.end__"]:
        m = _FUNC.search(line)
        if m:
            if name is not None:
                out[name] = _ops_after_wait(body, until_tile)
            name, k = m.group(2), 2
            while name in out:
                name = f"{m.group(2)}#{k}"
                k += 1
            body = []
            continue
        body.append(line)
    out.pop("end", None)
    return out


def main(argv: list[str] | None = None) -> int:
    from agentfast.engine.bench.models import SHAPES

    from .plan import Tiling, plan
    from .tune import TILING_KEYS, parse_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--T", type=int, default=1)
    ap.add_argument("--programs", type=int, default=264)
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--weights", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--set", default="", help="Tiling fields, k=v,k=v (ints; 0/1 for flags)")
    args = ap.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    fields = parse_variant(args.set)  # (tune's variant syntax and its errors)
    if set(fields) - TILING_KEYS:
        raise SystemExit(f"--set takes Tiling fields only, not {sorted(set(fields) - TILING_KEYS)}")
    tiling = Tiling(**fields)
    p = plan(SHAPES[args.shape], args.programs, args.T, args.max_len, tiling=tiling,
             wbytes=2 if args.weights == "bf16" else 4)
    k = compile_kernel(p, args.weights)
    print(f"{args.shape} T={args.T} {args.set or 'defaults'}: {resources(k.asm['cubin'])}, "
          f"shared {k.metadata.shared} bytes")
    full = after_waits(k.asm["ttgir"], until_tile=False)
    for fn, ops in after_waits(k.asm["ttgir"]).items():
        if fn.startswith("attn"):  # its blocks come after its first tile: to the end
            ops = full[fn]
        if ops:
            print(f"  {fn}: {' '.join(ops)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
