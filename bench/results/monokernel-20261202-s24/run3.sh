# Session 24, call 3: attn_wait_loop on by default at head_dim <= 64 (runs 1-2). How many matvec
# weight tiles each op requests before its wait (Tiling.stages: stages - 1 in flight, within
# Tiling.smem), and smaller tiles with more stages (chunk 4096). Same call, A/B/../A.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), f.get("shared"), r.get("stages"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m,qwen3-1.7b --steps 150 --variants ";stages=4;stages=5;chunk=4096,stages=5;chunk=4096,stages=7;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
