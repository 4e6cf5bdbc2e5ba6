# Session 24, call 1: T = 1 attention with the wait inside its key-block loop (Tiling.attn_wait_loop,
# ops_attn.attn_run_one: every cached block of a split's chunk requested before the wait) A/B in one
# call, 4 shapes, random bf16 weights, ctx 1024; attn_stages 4 (3 blocks ahead); the timeline of the
# new path; a T = 16 kernel's one-position steps; the kernel's GPU tests.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}; tl = (r.get("timeline") or {}).get("ops", {})
        print(r.get("shape"), r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
        for k in ("ATTN", "OPROJ_M"):
            if k in tl: print("   ", k, {a: b for a, b in tl[k].items() if a != "n"})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
S=qwen3-1.7b,llama-3.2-1b,smollm2-135m,qwen3-8b
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 --variants "attn_wait_loop=0;attn_wait_loop=1;attn_wait_loop=0;attn_wait_loop=1,attn_stages=4" > $OUT/tune.log 2>&1; echo tune rc=$?; show $OUT/tune.log
timeout 120 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b --steps 50 --timeline --variants "attn_wait_loop=0;attn_wait_loop=1" > $OUT/tune_tl.log 2>&1; echo tl rc=$?; show $OUT/tune_tl.log
TRITON_INTERPRET=0 timeout 120 python -m pytest -q -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests.log | cut -c1-300
