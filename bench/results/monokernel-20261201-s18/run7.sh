source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,qwen3-8b --steps 150 --variants "oproj_merge=1;attn_block=64;attn_stages=2" > $OUT/tune_a.log 2>&1; echo tune rc=$?
timeout 150 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m --steps 150 --variants "oproj_merge=1;attn_block=128;attn_block=32" > $OUT/tune_b.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for fn in ("tune_a.log", "tune_b.log"):
  for line in open(os.environ["OUT"] + "/" + fn):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
