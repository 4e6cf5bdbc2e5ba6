python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
V="T=16,narrow=2,one=1;T=16,narrow=2,one=2"
for S in smollm2-135m qwen3-1.7b; do
timeout 240 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 100 --ctx 1024 --timeline --variants "$V" > $OUT/tl_$S.log 2>&1; echo tune $S rc=$?
cp $OUT/tune.json $OUT/tl_$S.json
done
rm -f $OUT/*.npz
python - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + "/tl_*.log")):
    for line in open(f):
        if line.startswith("{"):
            r = json.loads(line)
            print(f.split("/")[-1], r.get("variant"), r.get("step_us"))
            for k, v in (r.get("timeline") or {}).get("ops", {}).items():
                ph = " ".join(f"{a}={b}" for a, b in v.items() if a.startswith("phase"))
                print("  %-10s n=%d span=%.1f sync=%.2f busy_med=%.2f busy_max=%.2f %s" % (k, v["n"], v["span_us"], v["sync_us"], v["busy_med_us"], v["busy_max_us"], ph))
PY
