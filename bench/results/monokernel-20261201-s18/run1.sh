source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
V="oproj_merge=0;oproj_merge=1"
timeout 520 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m,qwen3-8b --steps 150 --variants "$V" > $OUT/tune_om.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_om.log"):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
