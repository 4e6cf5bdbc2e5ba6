# Session 21, call 2 (no model): the T = 16 drafting kernel's wide steps by pipeline depth and
# attention splits (run 1: its matvecs and attention are most of a wide step); every variant's
# one-position, narrow and wide steps
source bench/device_setup.sh >/dev/null 2>&1
V=""
for k in "" ",stages=4" ",stages=6" ",attn_splits_t=16" ",attn_splits_t=32" ",attn_splits_t=4"; do
  for o in ",one=1" ",one=2" ""; do V="$V;T=16,narrow=2$k$o"; done
done
V="${V#;}"
timeout 560 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 60 --variants "$V" > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
