mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 250 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r3.json > $OUT/r3.log 2>&1; echo replay3 rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r3.log | cut -c1-330
TRITON_INTERPRET=0 timeout 300 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests_all.log
