# Session 28, call 7: QKV's whole run requested before its wait for down (stages_qkv=4: 3 tiles
# of 16 KB before the wait, default 2; QKV runs are 2-3 tiles), ctx 1024, T = 1, A/B/A/B.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants ";stages_qkv=4;;stages_qkv=4" > $OUT/tune.log 2>&1; echo rc=$?
python3 - $OUT/tune.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r["variant"], r["step_us"], r["roofline_frac"], r.get("stages"), f.get("registers"), f.get("spills"))
    elif line.strip():
        print(line.rstrip()[:200])
PY
