mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r4.json > $OUT/r4.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|^==" $OUT/r4.log | cut -c1-300
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram+mtp --mtp-floor 0.15 --check -n 128 --json $OUT/r5.json > $OUT/r5.log 2>&1; echo replay5 rc=$?
grep "^all\|  kind" $OUT/r5.log | cut -c1-300
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r6.json > $OUT/r6.log 2>&1; echo replay6 rc=$?
grep "^all\|  kind" $OUT/r6.log | cut -c1-300
