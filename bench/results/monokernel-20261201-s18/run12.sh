source bench/device_setup.sh >/dev/null 2>&1
V="oproj_merge=1;T=16,narrow=2,one=1,oproj_merge=0;T=16,narrow=2,one=1,oproj_merge=1;T=16,narrow=2,one=2,oproj_merge=0;T=16,narrow=2,one=2,oproj_merge=1;T=16,narrow=2,oproj_merge=0;T=16,narrow=2,oproj_merge=1"
timeout 280 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --variants "$V" > $OUT/tune_t16c.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_t16c.log"):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
