#!/bin/bash
# Session 34, call 7 (carry .whl_core): with qkv_ll on, two attention knobs again, interleaved,
# ctx 1024, T = 1: head_dim 128 (Qwen3-1.7B, Qwen3-8B) with the wait inside the key-block loop
# (attn_wait_loop=1: both 32-key blocks of a 64-key chunk requested before the wait); head_dim 64
# (Llama-3.2-1B, SmolLM2: one 64-key block a split) with 2 pipeline stages instead of 3.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,qwen3-8b --steps 150 \
  --variants ";attn_wait_loop=1;;attn_wait_loop=1" > $OUT/run7-tune-hd128.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run7-tune-hd128.json 2>/dev/null
timeout 150 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m --steps 150 \
  --variants ";attn_stages=2;;attn_stages=2" > $OUT/run7-tune-hd64.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run7-tune-hd64.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run7-tune-*.log | cut -c1-100
