source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
TRITON_INTERPRET=0 timeout 200 python -m pytest -q -m gpu -x tests/monokernel/test_mk_mtp_kernel.py > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests.log
V="T=16,narrow=2,one=1;T=16,narrow=2,one=1,mtp=1;T=16,narrow=2,one=2;T=16,narrow=2,one=2,mtp=1;T=16,narrow=2;T=16,narrow=2,mtp=1"
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m --steps 150 --ctx 512 --variants "$V" > $OUT/tune_mtp.log 2>&1; echo tune rc=$?
grep -o '"variant": {[^}]*}\|"step_us": [0-9.]*\|"error": "[^"]*"' $OUT/tune_mtp.log | paste - - | head -12
