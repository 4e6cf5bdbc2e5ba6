# Session 23, call 1: O-proj merging the narrow steps' attention (Tiling.narrow_merge) against the
# narrow steps' ticket merge, T = 16 narrow 2, one-position / narrow / wide steps, SmolLM2 and
# Qwen3-1.7B shapes, same call; then the GPU tests of the three-width kernels (narrow_merge included)
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
V=""
for o in ",one=2" ",one=1" ""; do
  for k in "" ",narrow_merge=1"; do V="$V;T=16,narrow=2$o$k"; done
done
V="${V#;}"
timeout 360 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --variants "$V" > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("shape"), r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
TRITON_INTERPRET=0 timeout 180 python -m pytest -q -m gpu tests/monokernel/test_mk_draft.py -k "three_widths" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -4 $OUT/gpu_tests.log | cut -c1-300
