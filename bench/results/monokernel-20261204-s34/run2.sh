#!/bin/bash
# Session 34, call 2 (carry .whl_core): the GPU tests of the kernel against the VM (T = 1 with
# qkv_ll across 264 programs, T = 4 / 8), then `agentfast bench` at ctx 1024 with the default
# (qkv_ll on), graph and HF eager beside it, 512 greedy steps checked against the reference.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 200 python -m pytest -q -m gpu tests/monokernel/test_mk_kernel.py -rA > $OUT/run2-gpu-tests.log 2>&1
echo "gpu tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/run2-gpu-tests.log | tail -8
timeout 390 agentfast bench --models llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m --backends graph,monokernel,hf-eager \
  --contexts 1024 --check-steps 512 --steps 200 --out $OUT --tag same-run > $OUT/run2-bench.log 2>&1; echo "bench rc=$?"
grep "^| " $OUT/*.md | head -20; tail -4 $OUT/run2-bench.log
