source bench/device_setup.sh >/dev/null 2>&1
V="oproj_merge=0;oproj_merge=1"
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m,qwen3-8b --steps 150 --variants "$V" > $OUT/tune_om.log 2>&1; echo tune rc=$?
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 100 --timeline --variants "oproj_merge=1" > $OUT/tune_tl.log 2>&1; echo tune rc=$?
rm -f $OUT/*.npz
python3 - <<'PY'
import json, os
for fn in ("tune_om.log", "tune_tl.log"):
  for line in open(os.environ["OUT"] + "/" + fn):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
        for k, o in (r.get("timeline") or {}).get("ops", {}).items():
            print("  ", k, {a: b for a, b in o.items() if a != "n"})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
