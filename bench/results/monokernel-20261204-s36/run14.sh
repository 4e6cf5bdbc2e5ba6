#!/bin/bash
# Prepared in session 35, NOT RUN (the session's device time ran out): the first call of the
# next session (carry .whl_core). Tiling.norm_early: QKV's and gate/up's RMSNorm weights
# requested before their waits (the offline sm_90 compile shows the load after x's sum of
# squares and its barrier: a dependent round trip after every such wake, twice a layer).
# Default / norm_early=1 interleaved, 4 shapes, ctx 1024, T = 1; then the traced step.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m,qwen3-8b \
  --steps 150 --variants ";norm_early=1;;norm_early=1" > $OUT/run14-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run14-tune.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run14-tune.log | cut -c1-110
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b --steps 150 \
  --variants "norm_early=1" --timeline > $OUT/run14-timeline.log 2>&1; echo "timeline rc=$?"
mv $OUT/tune.json $OUT/run14-timeline.json 2>/dev/null
