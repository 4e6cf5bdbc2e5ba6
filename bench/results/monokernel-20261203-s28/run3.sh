# Session 28, call 3: where run 1's gu_pre=2 went: a traced step (tune --timeline) of the
# default and gu_pre=2 on Llama-3.2-1B, ctx 1024 (code: run1-gu_pre.patch applied), and the
# per-layer chain of releases (layer_chain.py of session 25).
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b --steps 50 --timeline --variants ";gu_pre=2;;gu_pre=2" > $OUT/tune_tl.log 2>&1; echo rc=$?
python3 - $OUT/tune_tl.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); tl = r["timeline"]["ops"]
        print(r["variant"], r["step_us"], r["timeline"]["step_us"])
        for k, v in tl.items():
            print("   ", k, {a: b for a, b in v.items() if a in ("span_us", "busy_med_us", "busy_max_us", "wake_med_us", "wake_max_us", "phase2_us", "phase3_us", "phase4_us")})
    elif line.strip():
        print(line.rstrip()[:200])
PY
ls $OUT; for f in $OUT/timeline-*.npz; do python3 bench/results/monokernel-20261202-s25/layer_chain.py $f 16 2>&1 | tail -12; done
