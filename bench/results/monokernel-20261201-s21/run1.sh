# Session 21, call 1 (no model): per-op breakdown of the drafting kernel's step kinds beside the
# T = 1 kernel (where the one-position penalty, the narrow and the T-step costs go, by op kind),
# and the one-position attention compiled inline (Tiling.inline_one)
source bench/device_setup.sh >/dev/null 2>&1
V="T=1;T=16,narrow=2,one=1;T=16,narrow=2,one=1,inline_one=1;T=16,narrow=2,one=2;T=16,narrow=2"
timeout 500 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --variants "$V" --breakdown > $OUT/tune_bd.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune_bd.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
        if r.get("breakdown"):
            print("   ", r["breakdown"])
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
