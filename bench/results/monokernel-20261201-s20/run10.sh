# Session 20, call 10 (second half + wheels; call 4's script carried the first): replay free text,
# ngram, --check, with each turn's wall time and the plain turns' TTFT and wall time recorded
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind edit" $OUT/r_free.log | cut -c1-300
python3 - <<'PY'
import json, os
d = json.load(open(os.path.join(os.environ["OUT"], "r_free.json")))
for r in d:
    if r["kind"] != "all":
        continue
    for t in r["turns"]:
        o = t["wall_s"] - t["ttft_s"] - t["decode_s"]
        po = t["plain_wall_s"] - t["plain_ttft_s"] - t["plain_decode_s"]
        print(f'{t["trace"][:16]:16s} {t["turn"]} ttft {t["ttft_s"]*1e3:.2f} / {t["plain_ttft_s"]*1e3:.2f}  other {o*1e3:.2f} / {po*1e3:.2f}')
    print("seconds", r["seconds"], "sum wall", sum(t["wall_s"] for t in r["turns"]),
          "plain", r["plain_seconds"], "sum plain wall", sum(t["plain_wall_s"] for t in r["turns"]))
PY
