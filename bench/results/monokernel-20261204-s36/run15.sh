#!/bin/bash
# Session 36, call 15 (carry .whl_core): the defaults with Tiling.norm_early on (run 14: 1.2-2.1%
# faster on all four shapes): the GPU tests of the kernel against the VM, then `agentfast bench`
# at ctx 1024 beside graph and HF eager, 512 greedy steps checked against the reference.
set -u
mkdir -p /tmp/whl .whl && cp .whl_core/*.whl /tmp/whl/ && cp /tmp/whl/*.whl .whl/
source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 200 python -m pytest -q -m gpu tests/monokernel/test_mk_kernel.py -rA > $OUT/run15-gpu-tests.log 2>&1
echo "gpu tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/run15-gpu-tests.log | tail -8
timeout 380 agentfast bench --models llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m --backends graph,monokernel,hf-eager \
  --contexts 1024 --check-steps 512 --steps 200 --out $OUT --tag same-run > $OUT/run15-bench.log 2>&1; echo "bench rc=$?"
grep "^| " $OUT/*.md | head -20; tail -4 $OUT/run15-bench.log
