#!/bin/bash
# Session 35, call 2 (carry .whl_core): the tune at head_dim 128 (Qwen3-1.7B, Qwen3-8B), ctx
# 1024, T = 1, interleaved: default / ring_late=0 / the wait in the key-block loop with the new
# key its own step (attn_wait_loop=1,attn_new_last=1: both 32-key blocks of a 64-key chunk
# requested before the wait, then straight from shared memory into the dots) / the same with
# one 64-key block; twice.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
V="attn_wait_loop=1,attn_new_last=1"
timeout 560 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,qwen3-8b --steps 150 \
  --variants ";ring_late=0;$V;$V,attn_block=64;;ring_late=0;$V;$V,attn_block=64" \
  > $OUT/run2-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run2-tune.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run2-tune.log | cut -c1-110
