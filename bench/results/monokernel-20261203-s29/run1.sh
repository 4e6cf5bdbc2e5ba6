# Session 29, call 1: T = 1 attention chunks cut over the cached keys, the new key joining the
# last live split (ops_attn.live_range / split_end; run1-chunks.patch against 586fc51): at ctx
# 1024 Qwen3-1.7B attends in 32 one-block splits instead of 17 two-block ones. GPU tests of
# the kernel, then new / old (patch reverted) / new timing (ctx 1024, T = 1), with Llama's
# 32-key blocks as a variant (its chunks were 64 keys: two 32-key blocks before the change).
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
R=bench/results/monokernel-20261203-s29
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("shape"), r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:160])
PY
}
tune() { timeout 150 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants "$2" > $OUT/tune-$1.log 2>&1; echo "$1 rc=$?"; mv $OUT/tune.json $OUT/tune-$1.json; show $OUT/tune-$1.log; }
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -3
tune new1 ";attn_block=32"
(patch -s -R -p1 < $R/run1-chunks.patch || git apply -R $R/run1-chunks.patch) && echo reverted
tune old ";attn_block=32"
(patch -s -p1 < $R/run1-chunks.patch || git apply $R/run1-chunks.patch) && echo reapplied
tune new2 ""
