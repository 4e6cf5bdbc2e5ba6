# Session 21, call 4 (no model): the T = 16 drafting kernel with the merge of a kv head's splits
# head by head in one round (merge_heads=1, and with 4096-element rounds), and with O-proj
# merging the one-position steps' splits (oproj_merge=1); each variant's one-position, narrow and
# wide steps with the per-op breakdown
source bench/device_setup.sh >/dev/null 2>&1
V=""
for k in "" ",merge_heads=1" ",merge_heads=1,merge_elems=4096" ",oproj_merge=1"; do
  for o in ",one=1" ",one=2" ""; do V="$V;T=16,narrow=2$k$o"; done
done
V="${V#;}"
timeout 560 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 60 --variants "$V" --breakdown > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
        if r.get("breakdown"):
            print("   ", r["breakdown"])
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
