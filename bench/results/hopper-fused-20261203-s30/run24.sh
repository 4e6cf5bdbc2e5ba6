#!/bin/bash
# Session 32 run 24: the Triton monokernel with every release relaxed (tune's relaxed=1, timing
# only: the most a flag-in-data hand-over could save there) beside its default, same call.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants ";relaxed=1;;relaxed=1" > $OUT/run24-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run24-tune.json 2>/dev/null
grep "step_us" $OUT/run24-tune.log | cut -c1-110
tail -5 $OUT/run24-tune.log
