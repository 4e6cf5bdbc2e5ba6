# (Tiling.l2_ahead was removed after this run: apply run4-l2_ahead.patch to 03014cf to rerun it)
# Session 22, call 4: at T = 1, O-proj's merging records (OPROJ_M) request the first KB of this
# program's gate/up run into L2 before their wait (Tiling.l2_ahead, prefetch.global.L2, one per
# 128-byte line): HBM otherwise idles while attention runs. Off / 16 / 32 / 64 KB / off again,
# same call, four shapes, ctx 1024
source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 480 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b,smollm2-135m,qwen3-8b --steps 150 --variants "l2_ahead=0;l2_ahead=16;l2_ahead=32;l2_ahead=64;l2_ahead=0" > $OUT/tune.log 2>&1; echo tune rc=$?
python3 - <<'PY'
import json, os
for line in open(os.path.join(os.environ["OUT"], "tune.log")):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
