# Session 20, call 9: per-op breakdown at T = 1 of the current kernel (one op kind's compute skipped,
# its loads, waits and releases kept; LM head's loads go with its compute)
source bench/device_setup.sh >/dev/null 2>&1
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b,smollm2-135m,qwen3-8b --steps 100 --breakdown > $OUT/tune_bd.log 2>&1; echo tune rc=$?
grep -v "^ " $OUT/tune_bd.log | grep "breakdown\|GB of\|step_us" | cut -c1-400
