#!/bin/bash
# Session 34, call 3 (carry .whl_core): Tiling.attn_head_wait, each O-proj tile waiting for its
# kv head's attention tiles (per-kv-head counters) instead of the layer's. The GPU tests of the
# kernel against the VM (T = 1 with both defaults across 264 programs), then the tune, ctx 1024,
# T = 1: head wait off / on interleaved, both hand-overs off (session 33's kernel), and on top
# of the defaults ATTN's (mask 4) or DOWN's (32) releases unfenced (timing only).
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -m gpu tests/monokernel/test_mk_kernel.py -rA -k "equals_vm" > $OUT/run3-gpu-tests.log 2>&1
echo "gpu tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/run3-gpu-tests.log | tail -6
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m,qwen3-8b \
  --steps 150 --variants "attn_head_wait=0;;attn_head_wait=0;;qkv_ll=0,attn_head_wait=0;relaxed=4;relaxed=32" > $OUT/run3-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run3-tune.json 2>/dev/null
grep -E "^\{|roofline" $OUT/run3-tune.log | cut -c1-100
