# Session 26, call 4: the release deferred into the next op (Tiling.defer_release, T = 1): a
# record whose next record is a whole-row QKV, gate/up or down releases inside that op's loop,
# after the op's first weights are requested. GPU tests of the kernel (the new one among
# them), then A/B/A/B timing, ctx 1024 (the timeline is not taken: tracing turns it off).
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}; tl = (r.get("timeline") or {}).get("ops", {})
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), f.get("shared"), r.get("error"))
        for k, v in tl.items():
            print("   ", k, {a: b for a, b in v.items() if a in ("span_us", "busy_med_us", "busy_max_us", "wake_med_us", "wake_max_us")})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
TRITON_INTERPRET=0 timeout 200 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -5
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants ";defer_release=1;;defer_release=1" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log; mv $OUT/tune.json $OUT/tune_main.json
ls $OUT
