mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
timeout 150 python .devrun/prof17.py --backend monokernel --device cuda --drafter ngram+mtp -n 128 > $OUT/p17_mtp.log 2>&1; echo rc=$?
grep "^all\|launch GPU\|host ms" $OUT/p17_mtp.log | cut -c1-400
timeout 150 python .devrun/prof17.py --backend monokernel --device cuda --drafter ngram -n 128 > $OUT/p17_ngram.log 2>&1; echo rc=$?
grep "^all\|launch GPU\|host ms" $OUT/p17_ngram.log | cut -c1-400
