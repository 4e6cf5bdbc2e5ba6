python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
V="T=16,narrow=2,one=1;T=16,narrow=2,one=1,chunk=4096;T=16,narrow=2,one=1,attn_block=16;T=16,narrow=2,one=1,attn_splits_t=16;T=16,narrow=2,one=1,fma_t=0"
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 100 --ctx 1024 --variants "$V" > $OUT/tune_sp2.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.environ["OUT"] + "/tune_sp2.log"):
    if line.startswith("{"):
        r = json.loads(line); print(r.get("variant"), r.get("step_us"), r.get("fit"), r.get("error"))
PY
