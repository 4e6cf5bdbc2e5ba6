"""The monokernel compiles for the H200 (cuda sm_90) on a CPU machine, and its machine code
has the properties the design relies on; the portable path (no inline PTX) compiles for MI300X.

codegen.compile_kernel (triton.compile for GPUTarget("cuda", 90, 32)) in a child process with
the interpreter off (as tests/kernels/test_kernels_compile.py does). Checked in the PTX:
thread-0 polling with ld.acquire.gpu, release atomics on the counters, system-scope release for
the host ring's progress counter, 16-byte weight loads in the matvec tiles. Checked in the TTGIR
(codegen.after_waits): what an op does after its wait, where session 35 found time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# (case, T, sampling, head_dim, qk_norm, qkv_bias, window, weight type, Tiling fields)
CASES = {
    "qwen3_1p7b_T1_greedy": (1, False, 128, True, False, False, "bf16", {}),
    "qwen3_1p7b_T4_sampling": (4, True, 128, True, False, False, "bf16", {}),
    "smollm2_T1_sampling_window_bias": (1, True, 64, False, True, True, "bf16", {}),
    "llama_T16_fp32": (16, False, 64, False, False, False, "fp32", {}),
    "qwen3_1p7b_T1_norm_late": (1, False, 128, True, False, False, "bf16",
                                {"norm_early": False}),
}


def _compile(case: str, target: str = "cuda") -> dict:
    """target "cuda": sm_90 with the PTX waits; "hip": gfx942 (MI300X) with the portable path."""
    from agentfast.engine.config import ModelConfig
    from agentfast.kernels.monokernel import codegen
    from agentfast.kernels.monokernel.plan import Tiling, plan

    T, sampling, hd, qk_norm, bias, window, wt, fields = CASES[case]
    cfg = ModelConfig(arch="qwen3" if qk_norm else "llama", vocab_size=151936,
                      hidden_size=2048 if hd == 128 else 576,
                      intermediate_size=6144 if hd == 128 else 1536, num_layers=28,
                      num_heads=16 if hd == 128 else 9, num_kv_heads=8 if hd == 128 else 3,
                      head_dim=hd, qk_norm=qk_norm, qkv_bias=bias, o_bias=bias,
                      sliding_window=4096 if window else None)
    p = plan(cfg, 264, T, 4096, tiling=Tiling(**fields), wbytes=2 if wt == "bf16" else 4)
    k = codegen.compile_kernel(p, wt, sampling, target)
    if target == "hip":
        return {"hsaco": bool(k.asm.get("hsaco"))}
    ptx = k.asm["ptx"]
    lines = ptx.splitlines()
    w_loads = [ln for ln in lines if "ld.global" in ln and "evict_first" in ln]
    copies = [ln for ln in lines if "cp.async.cg.shared.global" in ln
              or "cp.async.ca.shared.global" in ln]
    return {
        "cubin": bool(k.asm.get("cubin")),
        "acquire_poll": sum("ld.acquire.gpu" in ln for ln in lines),
        "release_atomics": sum(("atom" in ln or "red" in ln) and ".release" in ln
                               and ".gpu" in ln for ln in lines),
        "sys_release": sum(".sys" in ln and ".release" in ln for ln in lines),
        "weight_loads": len(w_loads),
        "wide_weight_loads": sum(".v4.b32" in ln or ".v4.f32" in ln for ln in w_loads),
        "vector_weight_loads": sum(".v4." in ln or ".v2." in ln for ln in w_loads),
        "async_copies": len(copies),
        "wide_async_copies": sum(", 16" in ln or ", 0x10" in ln for ln in copies),
        "shared": k.metadata.shared,
        "hidden": cfg.hidden_size,
        "block": p.tiling.attn_block,
        "head_dim": hd,
        "waits": codegen.after_waits(k.asm["ttgir"]),
        "waits_full": codegen.after_waits(k.asm["ttgir"], until_tile=False),
        **codegen.resources(k.asm["cubin"]),
    }


@pytest.fixture(scope="module")
def compiled() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    jobs = [(c, "cuda") for c in CASES] + [("qwen3_1p7b_T1_greedy", "hip")]
    procs = {f"{c}:{t}": subprocess.Popen([sys.executable, __file__, c, t], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for c, t in jobs}
    out = {}
    for c, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"compiling {c} failed:\n{stderr[-4000:]}"
        out[c] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_compiles_for_h200(compiled, case):
    r = compiled[f"{case}:cuda"]
    assert r["cubin"], "no cubin"
    assert r["acquire_poll"] >= 1, "no ld.acquire.gpu poll"
    assert r["release_atomics"] >= 1, "no release atomic on the counters"
    assert r["sys_release"] >= 1, "progress counter is not released at system scope"
    # the matvec chunks stream through Triton's pipeliner: cp.async copies to shared memory
    assert r["async_copies"] >= 1, f"no cp.async in the matvec loops: {r}"
    assert r["vector_weight_loads"] == r["weight_loads"], f"scalar weight loads: {r}"
    if case.startswith("qwen3"):  # weight tiles of >= 4 rows x 512: 16-byte copies (the
        # activation slices beside them may be narrower)
        assert r["wide_async_copies"] >= r["async_copies"] // 2, f"few 16-byte copies: {r}"
        assert r["shared"] <= 228 * 1024 // 2, f"two programs no longer fit one SM: {r}"
    if case == "qwen3_1p7b_T1_greedy" and "registers" in r:
        # the backend's default: two programs of 4 warps per SM, registers uncapped, without
        # spills (inlined ops, whose hoisted loop invariants all live at once, needed 252
        # registers at 8 warps before spilling)
        assert r["registers"] <= 255 and r["stack"] == 0, r


@pytest.mark.parametrize("case", ["qwen3_1p7b_T1_greedy", "smollm2_T1_sampling_window_bias"])
def test_attention_blocks_go_straight_into_the_dots(compiled, case):
    """Tiling.attn_new_last (the default): after attention's wait (the tagged words' poll) no
    cached block of keys or values is written to shared memory from registers: the cp.async
    buffers feed the dots (patching the new key in made each block a shared -> registers ->
    shared round trip, session 35). The query rows are staged for their dot (16 x head_dim)."""
    r = compiled[f"{case}:cuda"]
    ops = r["waits_full"]["attn_run_one"]
    assert ops and ops[0] == "wait", ops
    block = f"to_shared:{r['block']}x{r['head_dim']}"
    assert block not in ops, ops
    assert f"to_shared:16x{r['head_dim']}" in ops and f"dot:16x{r['head_dim']}" in ops, ops


def test_norm_weights_load_before_or_after_the_wait(compiled):
    """QKV's and gate/up's RMSNorm weights: by default (Tiling.norm_early) no load of H values
    follows x's sum of squares; with norm_early off they load after it (a dependent round trip
    after the wake)."""
    for case, early in (("qwen3_1p7b_T1_greedy", True), ("qwen3_1p7b_T1_norm_late", False)):
        r = compiled[f"{case}:cuda"]
        for fn in ("qkv_run", "gateup_run"):
            ops = r["waits"][fn]
            after = ops[ops.index("reduce"):]
            assert (f"load:{r['hidden']}" in after) != early, (case, fn, ops)


def test_compiles_for_mi300x(compiled):
    assert compiled["qwen3_1p7b_T1_greedy:hip"]["hsaco"], "no hsaco"


if __name__ == "__main__":
    print(json.dumps(_compile(sys.argv[1], sys.argv[2])))
