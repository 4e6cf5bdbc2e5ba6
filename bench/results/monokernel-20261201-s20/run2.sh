# Session 20, call 2 (carries the model's first half): timeline at T = 1 with the wake-up stats; the
# T = 16 drafting kernel's one-position steps: code size vs spills (T=16 no narrow, narrow 2, T=8 narrow 2)
source bench/device_setup.sh >/dev/null 2>&1
timeout 150 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,smollm2-135m --steps 100 --timeline > $OUT/tune_tl.log 2>&1; echo tune tl rc=$?
V="one=1;T=16,one=1;T=16,narrow=2,one=1;T=8,narrow=2,one=1;T=16,narrow=2,one=2;T=16,narrow=2"
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,smollm2-135m --steps 100 --variants "$V" > $OUT/tune_t16.log 2>&1; echo tune t16 rc=$?
rm -f $OUT/*.npz.tmp
python3 - <<'PY'
import json, os
for fn in ("tune_tl.log", "tune_t16.log"):
    print("==", fn)
    for line in open(os.path.join(os.environ["OUT"], fn)):
        if line.startswith("{"):
            r = json.loads(line); f = r.get("fit") or {}
            print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
            for k, o in (r.get("timeline") or {}).get("ops", {}).items():
                print("  ", k, {a: b for a, b in o.items() if a != "n"})
        elif line.strip() and not line.startswith(" "):
            print(line.rstrip()[:160])
PY
