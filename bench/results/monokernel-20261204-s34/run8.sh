#!/bin/bash
# Session 34, call 8 (carry .whl_core): #4's other figures with today's kernel (qkv_ll on at
# T = 1): the cost of a T = 4, 8, 16 step relative to T = 1 at ctx 1024, and T = 1 at ctx 128,
# 4096, 32768, the four shapes.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m \
  --steps 100 --tsteps 4,8,16 --contexts 128,4096,32768 > $OUT/run8-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run8-tune.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run8-tune.log | cut -c1-110
