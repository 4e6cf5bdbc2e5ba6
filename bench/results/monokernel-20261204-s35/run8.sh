#!/bin/bash
# Session 35, call 8 (carry .whl_core): on the new defaults, 128-key blocks at head_dim 64
# (Llama-3.2-1B, SmolLM2: at ctx 1024 9 live splits of 128 keys instead of 17 of 64, half the
# partials for O-proj to merge), and 2 key-block stages at head_dim 128 (Qwen3-1.7B); default /
# knob twice, ctx 1024, T = 1.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
timeout 250 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m --steps 150 \
  --variants ";attn_block=128;;attn_block=128" > $OUT/run8-tune-hd64.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run8-tune-hd64.json 2>/dev/null
timeout 150 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 150 \
  --variants ";attn_stages=2;;attn_stages=2" > $OUT/run8-tune-hd128.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run8-tune-hd128.json 2>/dev/null
grep -hE "^\{|roofline" $OUT/run8-tune-*.log | cut -c1-110
