# Session 28, call 5: O-proj's whole run requested before its wait for attention (per-op stage
# cap stages_om 4 / 5 vs the default 3: 2 / 3 / 4 tiles of 8 KB before the wait), ctx 1024,
# T = 1, A/B/C/A on Llama-3.2-1B and Qwen3-1.7B.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants ";stages_om=4;stages_om=5;" > $OUT/tune.log 2>&1; echo rc=$?
python3 - $OUT/tune.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r["variant"], r["step_us"], r["roofline_frac"], r.get("stages"), f.get("registers"), f.get("spills"))
    elif line.strip():
        print(line.rstrip()[:200])
PY
