python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
TRITON_INTERPRET=0 timeout 300 python -m pytest -q -m gpu tests/monokernel > $OUT/gpu_tests_all.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests_all.log
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,llama-3.2-1b --steps 150 --ctx 1024 > $OUT/tune_t1.log 2>&1; echo tune rc=$?
grep -o '"variant": {[^}]*}\|"step_us": [0-9.]*\|"roofline_frac": [0-9.]*' $OUT/tune_t1.log | paste - - - | head
