"""Every kernel compiles for H200 (cuda sm_90) and MI300X (hip gfx942) on a CPU machine.

Compiles through triton.compile(ASTSource(...), target=GPUTarget(...)), the documented way to get
PTX/cubin and hsaco without a GPU. Triton's own library functions (tl.sum, ...) are interpreted
once TRITON_INTERPRET=1 is set in this process, so the compiles run in one child process per
target (this file run as a script) with the interpreter off. Also checks that the matvec's weight
loads are 16 bytes wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

B, F, I32, I64, INT, FLT = "*bf16", "*fp32", "*i32", "*i64", "i32", "fp32"

MV = dict(w_ptr=B, wu_ptr=B, x_ptr=B, b_ptr=B, nw_ptr=B, res_ptr=B, y_ptr=B, pmax_ptr=F,
          pidx_ptr=I32, N=INT, eps=FLT)
MV_OFF = dict(HAS_BIAS=False, HAS_RES=False, HAS_NORM=False, GATED=False, ARGMAX=False,
              EVEN_K=True, UNROLL=True)
ROPE = dict(qkv_ptr=F, qn_ptr=B, kn_ptr=B, cos_ptr=F, sin_ptr=F, pos_ptr=I32, q_ptr=B, kc_ptr=B,
            vc_ptr=B, max_len=INT, stride_ch=INT, stride_ct=INT, eps=FLT)
SPLIT = dict(q_ptr=B, k_ptr=B, v_ptr=B, pos_ptr=I32, ws_ptr=F, stride_h=INT, stride_t=INT,
             qk_scale=FLT, window=INT)
REDUCE = dict(ws_ptr=F, pos_ptr=I32, out_ptr=B, window=INT)

# id: (module, kernel, argument types, constexprs, num_warps)
CASES = {
    "rmsnorm": ("rmsnorm", "_rmsnorm_kernel", dict(x_ptr=B, res_ptr=B, w_ptr=B, y_ptr=B, H=INT,
                eps=FLT), dict(HAS_RES=False, BLOCK=2048), 4),
    "add_rmsnorm": ("rmsnorm", "_rmsnorm_kernel", dict(x_ptr=B, res_ptr=B, w_ptr=B, y_ptr=B,
                    H=INT, eps=FLT), dict(HAS_RES=True, BLOCK=8192), 8),
    "matvec_qkv_bias_f32out": ("matvec", "_matvec_kernel", {**MV, "y_ptr": F},
                               {**MV_OFF, "K": 2048, "HAS_BIAS": True, "BLOCK_N": 16,
                                "BLOCK_K": 512}, 8),
    "matvec_down_residual": ("matvec", "_matvec_kernel", MV,
                             {**MV_OFF, "K": 6144, "HAS_RES": True, "UNROLL": False,
                              "BLOCK_N": 4, "BLOCK_K": 512}, 4),
    "matvec_norm_gate_up": ("matvec", "_matvec_kernel", MV,
                            {**MV_OFF, "K": 2048, "HAS_NORM": True, "GATED": True,
                             "BLOCK_N": 8, "BLOCK_K": 512}, 4),
    "matvec_lm_head_argmax": ("matvec", "_matvec_kernel", {**MV, "y_ptr": F},
                              {**MV_OFF, "K": 2048, "HAS_NORM": True, "ARGMAX": True,
                               "BLOCK_N": 16, "BLOCK_K": 512}, 8),
    "matvec_odd_k": ("matvec", "_matvec_kernel", MV,
                     {**MV_OFF, "K": 576, "EVEN_K": False, "BLOCK_N": 1, "BLOCK_K": 512}, 4),
    "rope_qwen3": ("qkv_rope", "_rope_append_kernel", ROPE,
                   dict(NUM_HEADS=16, NUM_KV_HEADS=8, HEAD_DIM=128, QK_NORM=True), 1),
    "rope_smollm2": ("qkv_rope", "_rope_append_kernel", ROPE,
                     dict(NUM_HEADS=9, NUM_KV_HEADS=3, HEAD_DIM=64, QK_NORM=False), 1),
    "attn_split_hd128": ("attention", "_attn_split_kernel", SPLIT,
                         dict(NUM_HEADS=32, GROUP=4, BLOCK_G=16, HEAD_DIM=128, NUM_SPLITS=64,
                              BLOCK_T=64, HAS_WINDOW=False, IEEE=False), 4),
    "attn_split_hd64_window": ("attention", "_attn_split_kernel", SPLIT,
                               dict(NUM_HEADS=9, GROUP=3, BLOCK_G=16, HEAD_DIM=64,
                                    NUM_SPLITS=64, BLOCK_T=128, HAS_WINDOW=True, IEEE=False), 4),
    "attn_split_hd16_tiny": ("attention", "_attn_split_kernel", SPLIT,
                             dict(NUM_HEADS=4, GROUP=2, BLOCK_G=16, HEAD_DIM=16, NUM_SPLITS=8,
                                  BLOCK_T=64, HAS_WINDOW=False, IEEE=False), 4),
    "attn_reduce": ("attention", "_attn_reduce_kernel", REDUCE,
                    dict(NUM_HEADS=32, HEAD_DIM=128, NUM_SPLITS=64, BLOCK_T=64, BLOCK_S=64,
                         HAS_WINDOW=True), 4),
    "block_argmax": ("lm_head", "_block_argmax_kernel", dict(x_ptr=F, pmax_ptr=F, pidx_ptr=I32,
                     N=INT), dict(BLOCK=4096), 8),
    "reduce_argmax": ("lm_head", "_reduce_argmax_kernel", dict(pmax_ptr=F, pidx_ptr=I32,
                      out_ptr=I32, P=INT), dict(BLOCK=4096), 8),
    "sample": ("lm_head", "_sample_kernel", dict(val_ptr=F, idx_ptr=I64, temp_ptr=F, topk_ptr=I32,
               topp_ptr=F, seed_ptr=I64, off_ptr=I64, out_ptr=I32, C=INT), dict(BLOCK=1024), 4),
}
TARGETS = {"sm90": ("cuda", 90, 32), "gfx942": ("hip", "gfx942", 64)}


def _compile_one(case: str, target: str) -> str:
    """'ok', 'skip: why' or an error message."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod_name, fn_name, types, consts, num_warps = CASES[case]
    fn = getattr(importlib.import_module(f"agentfast.kernels.{mod_name}"), fn_name)
    sig = {p.name: "constexpr" if p.is_constexpr else types[p.name] for p in fn.params}
    if set(consts) != {p.name for p in fn.params if p.is_constexpr}:
        return "error: constexpr names differ from the kernel's"
    # pointers 16-byte aligned, as torch allocations are (the JIT specializes on this)
    attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
             if sig[p.name].startswith("*")}
    try:
        src = ASTSource(fn, sig, consts, attrs)
    except TypeError as e:
        return f"skip: ASTSource signature differs in triton {triton.__version__}: {e}"
    k = triton.compile(src, target=GPUTarget(*TARGETS[target]), options={"num_warps": num_warps})
    if not k.asm.get("cubin" if target == "sm90" else "hsaco"):
        return "error: no binary"
    if target == "sm90" and case.startswith("matvec") and case != "matvec_odd_k":
        loads = [ln for ln in k.asm["ptx"].splitlines() if "ld.global" in ln and "evict" in ln]
        if not loads or not all(".v4.b32" in ln for ln in loads):
            return "error: weight loads are not 16 bytes wide"
    return "ok"


def _worker(target: str) -> None:
    res = {}
    for case in CASES:
        try:
            res[case] = _compile_one(case, target)
        except Exception as e:  # reported per case by the tests
            res[case] = f"error: {type(e).__name__}: {str(e)[:2000]}"
    print(json.dumps(res))


@pytest.fixture(scope="module")
def results() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    procs = {t: subprocess.Popen([sys.executable, __file__, t], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for t in TARGETS}  # both targets at once
    out = {}
    for t, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, f"compile worker for {t} failed:\n{stderr[-3000:]}"
        out[t] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("case", list(CASES))
def test_compiles(results, case, target):
    status = results[target][case]
    if status.startswith("skip"):
        pytest.skip(status)
    assert status == "ok", status


if __name__ == "__main__":
    _worker(sys.argv[1])
