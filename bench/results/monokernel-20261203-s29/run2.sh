# Session 29, call 2: Tiling.row_runs (matvec runs balanced by rows, cut into BN-row tiles from
# each run's start; on by default in this tree) and Tiling.part16 (attention's split outputs
# normalized and stored in bf16, halving what O-proj's merge loads after its wait): the GPU
# tests of the kernel (a bf16 part16 case among them), then A/B/C/A/B/C timing (ctx 1024,
# T = 1) on Llama-3.2-1B, Qwen3-1.7B and SmolLM2-135M.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:160])
PY
}
TRITON_INTERPRET=0 timeout 170 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -3
timeout 360 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants "row_runs=0;row_runs=1;row_runs=1,part16=1;row_runs=0;row_runs=1;row_runs=1,part16=1" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
