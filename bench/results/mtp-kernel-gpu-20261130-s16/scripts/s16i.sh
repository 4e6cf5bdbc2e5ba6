mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r7.json > $OUT/r7.log 2>&1; echo replay7 rc=$?
grep "^all\|  kind\|^==" $OUT/r7.log | cut -c1-300
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram+mtp --mtp-floor 0.15 --check -n 128 --json $OUT/r8.json > $OUT/r8.log 2>&1; echo replay8 rc=$?
grep "^all\|  kind" $OUT/r8.log | cut -c1-300
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r9.json > $OUT/r9.log 2>&1; echo replay9 rc=$?
grep "^all\|  kind" $OUT/r9.log | cut -c1-300
timeout 120 python .devrun/prof17.py --backend monokernel --device cuda --drafter ngram+mtp -n 128 > $OUT/p18_mtp.log 2>&1; echo rc=$?
grep "^all\|launch GPU\|host ms" $OUT/p18_mtp.log | cut -c1-400
