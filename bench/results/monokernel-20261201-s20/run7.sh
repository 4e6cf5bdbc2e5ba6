# Session 20, call 7 (carries the model's first half): the wait's nanosleep A/B (T = 1), while the
# model half lands in /tmp/emb
source bench/device_setup.sh >/dev/null 2>&1
S=qwen3-1.7b,smollm2-135m,llama-3.2-1b
timeout 120 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 > $OUT/tune_sleep20.log 2>&1; echo tune 20 rc=$?
cp kernels/monokernel/sync.py /tmp/sync20.py
python3 - <<'PY'
p = "kernels/monokernel/sync.py"
s = open(p).read()
assert "    nanosleep.u32 20;\n" in s
open(p, "w").write(s.replace("    nanosleep.u32 20;\n", ""))
PY
timeout 120 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 > $OUT/tune_sleep0.log 2>&1; echo tune 0 rc=$?
cp /tmp/sync20.py kernels/monokernel/sync.py
timeout 120 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 150 > $OUT/tune_sleep20b.log 2>&1; echo tune 20b rc=$?
python3 - <<'PY'
import json, os
for fn in ("tune_sleep20.log", "tune_sleep0.log", "tune_sleep20b.log"):
    print("==", fn)
    for line in open(os.path.join(os.environ["OUT"], fn)):
        if line.startswith("{"):
            r = json.loads(line)
            print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), r.get("error"))
        elif line.strip() and not line.startswith(" "):
            print(line.rstrip()[:160])
PY
