mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r2.json > $OUT/r2.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|^==" $OUT/r2.log | cut -c1-330
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram+mtp --mtp-floor 0.6 --check -n 128 --json $OUT/r3.json > $OUT/r3.log 2>&1; echo replay3 rc=$?
grep "^all\|  kind" $OUT/r3.log | cut -c1-330
timeout 100 python .devrun/prof16.py ngram+mtp > $OUT/prof_mtp.txt 2>&1; echo prof rc=$?; head -1 $OUT/prof_mtp.txt
timeout 100 python .devrun/prof16.py ngram > $OUT/prof_ngram.txt 2>&1; echo prof rc=$?; head -1 $OUT/prof_ngram.txt
