#!/bin/bash
# Session 34, call 1 (carry .whl_core): Tiling.qkv_ll, QKV handing q / k / v to attention as
# tagged 8-byte words that attention polls (no fence on QKV's release, no acquire on its
# counter). GPU tests of the monokernel (many programs: the words cross SMs), then the tune
# with qkv_ll off / on interleaved, 4 shapes, ctx 1024, T = 1.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
TRITON_INTERPRET=0 timeout 240 python -m pytest -q -m gpu tests/monokernel > $OUT/run1-gpu-tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/run1-gpu-tests.log
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m,qwen3-8b \
  --steps 150 --variants "qkv_ll=0;;qkv_ll=0;" > $OUT/run1-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run1-tune.json 2>/dev/null
tail -30 $OUT/run1-tune.log | cut -c1-150
