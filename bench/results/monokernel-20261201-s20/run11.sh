# Session 20, call 11: run 10 with gc.collect() after each engine's warm-up (patched on the device):
# is the first drafting turn's 7 ms outside TTFT and decode a garbage collection?
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
python3 - <<'PY'
p = "spec_decode/replay.py"
s = open(p).read()
s = s.replace("        warm_up(eng, pick, tool_sets)\n", "        warm_up(eng, pick, tool_sets)\n        __import__('gc').collect()\n")
s = s.replace("        warm_up(plain, tool_sets=tool_sets)\n", "        warm_up(plain, tool_sets=tool_sets)\n        __import__('gc').collect()\n")
assert s.count("gc').collect()") == 2
open(p, "w").write(s)
PY
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind edit" $OUT/r_free.log | cut -c1-300
python3 - <<'PY'
import json, os
d = json.load(open(os.path.join(os.environ["OUT"], "r_free.json")))
for r in d:
    if r["kind"] != "all":
        continue
    for t in r["turns"][:6]:
        o = t["wall_s"] - t["ttft_s"] - t["decode_s"]
        po = t["plain_wall_s"] - t["plain_ttft_s"] - t["plain_decode_s"]
        print(f'{t["trace"][:16]:16s} {t["turn"]} ttft {t["ttft_s"]*1e3:.2f} / {t["plain_ttft_s"]*1e3:.2f}  other {o*1e3:.2f} / {po*1e3:.2f}')
PY
