#!/bin/bash
# Session 34, call 4 (carry .whl_core): today's kernel (qkv_ll on), ctx 1024, T = 1: the per-op
# breakdown (each op kind's compute skipped, waits and releases kept) and one traced step
# (per-op span on the critical path, sync latency, busy time) on Llama-3.2-1B and Qwen3-1.7B.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 \
  --breakdown --timeline > $OUT/run4-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run4-tune.json 2>/dev/null
grep -v "^{" $OUT/run4-tune.log | tail -40 | cut -c1-160
