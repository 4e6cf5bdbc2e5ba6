#!/bin/bash
# Session 35, call 7 (no carry; wheels from /tmp/whl): T = 4, 8, 16 steps against T = 1 at
# ctx 1024, and T = 1 at ctx 128 / 4096 / 32768, 4 shapes.
set -u
mkdir -p .whl && cp /tmp/whl/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m \
  --steps 100 --tsteps 4,8,16 --contexts 128,4096,32768 > $OUT/run7-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run7-tune.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run7-tune.log | cut -c1-110
