# Session 25, call 2: the attention splits with no keys (15 of 32 per kv head at ctx 1024) warm
# gate/up (Tiling.gu_warm rows of each run), O-proj (o_warm) and down (dn_warm rows) in L2
# while attention runs.
# A/B/../A in one call, ctx 1024, T = 1; timeline of default and gu_warm=8,o_warm=1 on Llama.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}; tl = (r.get("timeline") or {}).get("ops", {})
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), f.get("shared"), r.get("stages"), r.get("error"))
        for k, v in tl.items():
            print("   ", k, {a: b for a, b in v.items() if a in ("span_us", "busy_med_us", "busy_max_us", "wake_med_us", "wake_max_us")})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants ";gu_warm=4;gu_warm=8;gu_warm=12;gu_warm=16;gu_warm=8,o_warm=1;gu_warm=8,o_warm=1,dn_warm=2;gu_warm=8,dn_warm=4;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log; mv $OUT/tune.json $OUT/tune_main.json
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b --steps 50 --timeline --variants ";gu_warm=8,o_warm=1" > $OUT/tune_tl.log 2>&1; echo tl rc=$?; show $OUT/tune_tl.log
ls $OUT
