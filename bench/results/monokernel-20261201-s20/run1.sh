# Session 20, call 1: the wait's poll (aefa208) A/B in one call, T = 1, 4 shapes, random bf16 weights
set -x
nvidia-smi -L
source bench/device_setup.sh >/dev/null 2>&1
S=qwen3-1.7b,llama-3.2-1b,smollm2-135m,qwen3-8b
timeout 250 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 > $OUT/tune_new.log 2>&1; echo tune new rc=$?
cp kernels/monokernel/sync.py /tmp/sync_new.py && cp .devrun/sync_old.py kernels/monokernel/sync.py
timeout 230 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 > $OUT/tune_old.log 2>&1; echo tune old rc=$?
cp /tmp/sync_new.py kernels/monokernel/sync.py
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,smollm2-135m --steps 150 > $OUT/tune_new2.log 2>&1; echo tune new2 rc=$?
python3 - <<'PY'
import json, os
for fn in ("tune_new.log", "tune_old.log", "tune_new2.log"):
    print("==", fn)
    for line in open(os.path.join(os.environ["OUT"], fn)):
        if line.startswith("{"):
            r = json.loads(line); f = r.get("fit") or {}
            print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
        elif line.strip() and not line.startswith(" "):
            print(line.rstrip()[:160])
PY
