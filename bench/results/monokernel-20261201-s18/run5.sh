source bench/device_setup.sh >/dev/null 2>&1
timeout 280 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b,smollm2-135m --steps 150 --tsteps 4,8,16 --contexts 128,4096,32768 > $OUT/tune_ctx.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_ctx.log"):
    if line.startswith("{"):
        r = json.loads(line)
        print(r.get("T"), r.get("ctx"), r.get("step_us"), r.get("tok_s"), r.get("roofline_frac"), r.get("vs_T1"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
