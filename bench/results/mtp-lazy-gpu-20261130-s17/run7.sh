python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING
V="T=1;T=16,narrow=2,one=1;T=16,narrow=2,one=2;T=16,narrow=2,one=2,narrow_attn1=1"
timeout 560 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --ctx 1024 --variants "$V" > $OUT/tune_n.log 2>&1; echo tune rc=$?
grep -o '"shape": "[^"]*"\|"variant": {[^}]*}\|"step_us": [0-9.]*\|"error": "[^"]*"' $OUT/tune_n.log | paste - - - | head -12
grep -o '"variant": {[^}]*}\|"step_us": [0-9.]*\|"error": "[^"]*"' $OUT/tune_n.log | paste - - | head -12
