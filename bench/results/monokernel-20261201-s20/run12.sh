# Session 20, call 12 (second half + wheels; run4.sh carried the first): the replays with the chat
# template compiled in the warm-up (the first timed turn paid it before); free text and --tools
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|Error" $OUT/r_free.log | cut -c1-300
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r_tools.json > $OUT/r_tools.log 2>&1; echo replay tools rc=$?
grep "^all\|  kind edit\|Error" $OUT/r_tools.log | cut -c1-300
python3 - <<'PY'
import json, os
d = json.load(open(os.path.join(os.environ["OUT"], "r_free.json")))
for r in d:
    if r["kind"] == "all":
        t = r["turns"][0]
        print(r["drafter"], "first turn other (ms)", round((t["wall_s"] - t["ttft_s"] - t["decode_s"]) * 1e3, 2),
              "plain", round((t["plain_wall_s"] - t["plain_ttft_s"] - t["plain_decode_s"]) * 1e3, 2))
PY
