source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 400 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests_all.log
