# Session 28, call 1: Tiling.gu_pre (gate/up rows preloaded into registers by warps 1-3 when
# O-proj starts): the GPU tests of the kernel (the new gu_pre test among them), then A/B/C/A
# timing (ctx 1024, T = 1) on Llama-3.2-1B and Qwen3-1.7B.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}; tl = (r.get("timeline") or {}).get("ops", {})
        print(r.get("shape"), r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), f.get("shared"), r.get("error"))
        for k, v in tl.items():
            print("   ", k, {a: b for a, b in v.items() if a in ("span_us", "busy_med_us", "busy_max_us", "wake_med_us", "wake_max_us")})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
TRITON_INTERPRET=0 timeout 240 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -5
timeout 330 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants ";gu_pre=2;gu_pre=4;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log; mv $OUT/tune.json $OUT/tune_main.json
