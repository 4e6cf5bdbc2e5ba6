# Session 21, call 3 (carries the model's first half for call 4): T > 1 matvecs waiting inside
# their chunk loop (weights requested before the wait, x loaded after it, the rms from the first
# tile's chunks) against the wait before the loop (AGENTFAST_T_WAIT_LOOP=0: session 20's code),
# same call; per-op breakdown of the wide steps
source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/emb | tail -1
V="T=16,narrow=2;T=16,narrow=2,one=2"
for wl in 0 1; do
  AGENTFAST_T_WAIT_LOOP=$wl TRITON_CACHE_DIR=/tmp/tc$wl timeout 260 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 60 --variants "$V" --breakdown > $OUT/tune_wl$wl.log 2>&1; echo tune wl=$wl rc=$?
done
python3 - <<'PY'
import json, os
for wl in (0, 1):
    print("== T_WAIT_LOOP", wl)
    for line in open(os.path.join(os.environ["OUT"], f"tune_wl{wl}.log")):
        if line.startswith("{"):
            r = json.loads(line); f = r.get("fit") or {}
            print(r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
            if r.get("breakdown"):
                print("   ", r["breakdown"])
        elif line.strip() and not line.startswith(" "):
            print(line.rstrip()[:200])
PY
