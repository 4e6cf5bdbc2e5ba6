# Session 20, call 6 (machine warm, model from call 4/5): replay with the traces' tools declared
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 300 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r_tools.json > $OUT/r_tools.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r_tools.log | cut -c1-250
