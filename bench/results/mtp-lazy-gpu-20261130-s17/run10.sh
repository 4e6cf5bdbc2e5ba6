python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
V="T=16,narrow=2,one=1;T=16,narrow=2,one=1,merge_elems=4096;T=16,narrow=2,one=1,bn_lm_t=16;T=8,narrow=2,one=1;T=4,one=1"
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 100 --ctx 1024 --variants "$V" > $OUT/tune_sp.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_sp.log"):
    if line.startswith("{"):
        r = json.loads(line); print(r.get("variant"), r.get("step_us"), r.get("fit"), r.get("error"))
PY
