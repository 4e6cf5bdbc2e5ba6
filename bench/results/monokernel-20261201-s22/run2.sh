# Session 22, call 2 (carries the model's first half for call 3): every GPU test of the repo
# (kind_tables now on by default at T > 1); those that need the embedded model skip here
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L; ls -la /tmp/emb
TRITON_INTERPRET=0 timeout 480 python -m pytest -q -m gpu tests -p no:cacheprovider -rs > $OUT/gpu_tests.log 2>&1; echo tests rc=$?
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tests.log | cut -c1-250 | tail -15
