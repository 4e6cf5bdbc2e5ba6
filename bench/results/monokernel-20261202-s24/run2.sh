# Session 24, call 2: after run 1 (the wait in the key-block loop: Llama-3.2-1B -1%, SmolLM2 ~0,
# Qwen3-1.7B 0, Qwen3-8B +1.2% with 10 spill words), larger key blocks, now streamed through shared
# memory by the loop instead of held in registers across the wait: 64 keys at head_dim 128, 128 at 64
# (fewer, longer splits), stages 3 or 2. Same call, A/B/A.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), f.get("shared"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,qwen3-8b --steps 150 --variants "attn_wait_loop=0;attn_wait_loop=1,attn_block=64;attn_wait_loop=1,attn_block=64,attn_stages=2;attn_wait_loop=0" > $OUT/tune_hd128.log 2>&1; echo rc=$?; show $OUT/tune_hd128.log
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,smollm2-135m --steps 150 --variants "attn_wait_loop=0;attn_wait_loop=1;attn_wait_loop=1,attn_block=128;attn_wait_loop=1,attn_block=128,attn_stages=2;attn_wait_loop=0" > $OUT/tune_hd64.log 2>&1; echo rc=$?; show $OUT/tune_hd64.log
