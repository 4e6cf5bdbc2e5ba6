#!/bin/bash
# Session 34, call 5 (carry .whl_core): with qkv_ll on, attention's KV splits per kv head at
# T = 1, default (32 where the merge's one round allows) against 16 (half the partials for
# O-proj's merge to load, 64 keys a split), interleaved, ctx 1024.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 \
  --variants ";attn_splits=16;;attn_splits=16" > $OUT/run5-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run5-tune.json 2>/dev/null
grep -E "^\{|roofline" $OUT/run5-tune.log | cut -c1-100
