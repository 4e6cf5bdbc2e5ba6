python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -m gpu -x tests/monokernel/test_mk_mtp_kernel.py > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -2 $OUT/gpu_tests.log
timeout 120 python .devrun/fill_time.py > $OUT/fill_time.log 2>&1; echo fill rc=$?; head -8 $OUT/fill_time.log
V="T=16,narrow=2,one=1;T=16,narrow=2,one=1,mtp=1"
timeout 240 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m --steps 150 --ctx 512 --timeline --variants "$V" > $OUT/tune_tl.log 2>&1; echo tune rc=$?
python - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_tl.log"):
    if line.startswith("{"):
        r = json.loads(line)
        print(r.get("variant"), r.get("step_us"))
        for k, v in (r.get("timeline") or {}).get("ops", {}).items():
            print("  ", k, v["n"], v["span_us"], v["busy_med_us"], v["busy_max_us"])
PY
