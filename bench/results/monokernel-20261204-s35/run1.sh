#!/bin/bash
# Session 35, call 1 (carry .whl_core): GPU test of the kernel against the VM with this
# session's default (Tiling.ring_late: SAMPLE publishes the host ring after the step's
# release), then the tune at head_dim 64 (Llama-3.2-1B, SmolLM2-135M), ctx 1024, T = 1,
# interleaved: default / ring_late=0 / attn_new_last=1 (the new key its own online step,
# the cached blocks from the cp.async buffers straight into the dots), twice.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -m gpu tests/monokernel/test_mk_kernel.py \
  -k equals_vm > $OUT/run1-gpu-tests.log 2>&1
echo "gpu tests rc=$?"; tail -3 $OUT/run1-gpu-tests.log
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m \
  --steps 150 --variants ";ring_late=0;attn_new_last=1;;ring_late=0;attn_new_last=1" \
  > $OUT/run1-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run1-tune.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run1-tune.log | cut -c1-110
