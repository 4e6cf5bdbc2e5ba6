# Session 21, call 5 (carries the model's first half for call 6): records that do nothing in a
# step (OPROJ in one-position steps where OPROJ_M merged, OPROJ_M in the others, an MTP module's
# ops in a step without it) add to their counter relaxed, without the release's barrier and
# fence; O-proj merging in the T = 16 kernel's one-position steps (oproj_merge on at T > 1)
# against off, same call, SmolLM2 shape
source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/emb | tail -1
V=""
for k in ",oproj_merge=0" ""; do
  for o in ",one=1" ",one=2" ""; do V="$V;T=16,narrow=2$k$o"; done
done
V="${V#;}"
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m --steps 100 --variants "$V" > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
