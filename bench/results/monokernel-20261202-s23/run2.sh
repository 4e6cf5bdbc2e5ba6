# Session 23, call 2: timeline of the T = 16 narrow-2 kernel's narrow steps with and without
# O-proj merging their attention (Tiling.narrow_merge), SmolLM2 and Qwen3-1.7B: per op kind span,
# wake-up, busy time and the phases after the wait
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 60 --timeline --variants "T=16,narrow=2,one=2;T=16,narrow=2,one=2,narrow_merge=1" > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line)
        print(r.get("variant"), r.get("step_us"))
        for op, k in (r.get("timeline") or {}).items():
            if isinstance(k, dict):
                print("  ", op, {a: (round(b, 2) if isinstance(b, float) else b) for a, b in k.items()})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
