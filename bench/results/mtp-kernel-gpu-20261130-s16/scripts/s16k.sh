python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
V="T=16,narrow=2,one=1;T=16,narrow=2,one=1,mtp=1;T=16,narrow=2,one=2;T=16,narrow=2,one=2,mtp=1;T=16,narrow=2;T=16,narrow=2,mtp=1"
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m --steps 150 --ctx 512 --variants "$V" > $OUT/tune_mtp3.log 2>&1; echo tune rc=$?
grep -o '"variant": {[^}]*}\|"step_us": [0-9.]*\|"error": "[^"]*"' $OUT/tune_mtp3.log | paste - - | head -12
