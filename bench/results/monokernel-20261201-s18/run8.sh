source bench/device_setup.sh >/dev/null 2>&1
V="oproj_merge=0;oproj_merge=1;T=16,narrow=2,one=1,oproj_merge=0;T=16,narrow=2,one=1;T=16,narrow=2,one=2,oproj_merge=0;T=16,narrow=2,one=2;T=16,narrow=2,oproj_merge=0;T=16,narrow=2"
timeout 280 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --variants "$V" > $OUT/tune_t16.log 2>&1; echo tune rc=$?
# (+ the same summary printer as run9.sh)
