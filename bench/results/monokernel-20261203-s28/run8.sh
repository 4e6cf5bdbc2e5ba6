# Session 28, call 8: Qwen3-1.7B's attention at ctx 1024 walks 64-key chunks as two serial 32-key
# blocks (head_dim 128): one block of 64 keys instead, through shared memory (attn_wait_loop=1,
# attn_block=64) or held in registers (attn_block=64); T = 1, A/B/C/D/A.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 250 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 150 --variants ";attn_wait_loop=1,attn_block=64;attn_block=64;attn_wait_loop=1;" > $OUT/tune.log 2>&1; echo rc=$?
python3 - $OUT/tune.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r["variant"], r["step_us"], r["roofline_frac"], f.get("registers"), f.get("spills"), f.get("shared"), r.get("error"))
    elif line.strip():
        print(line.rstrip()[:200])
PY
