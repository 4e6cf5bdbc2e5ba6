# Session 24 (second sitting), call 4: per-op caps on the matvec stages (Tiling.stages_qkv /
# stages_om / stages_gu / stages_dn: the tiles an op requests before its wait; the hypothesis:
# the wait's poll returns behind the data in flight, GATEUP's wake 1.65 us vs DOWN's 0.5),
# A/B/../A in one call with the defaults of runs 1-3 (attn_wait_loop on at head_dim 64);
# timeline of the default and of stages_gu=2 on Llama-3.2-1B; the kernel's GPU tests.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}; tl = (r.get("timeline") or {}).get("ops", {})
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("stages"), r.get("error"))
        for k, v in tl.items():
            print("   ", k, {a: b for a, b in v.items() if a in ("span_us", "busy_med_us", "busy_max_us", "wake_med_us", "wake_max_us")})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants ";stages_gu=2;stages_gu=2,stages_qkv=2;stages_dn=2,stages_om=2;stages=2;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b --steps 50 --timeline --variants ";stages_gu=2" > $OUT/tune_tl.log 2>&1; echo tl rc=$?; show $OUT/tune_tl.log
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -m gpu tests/monokernel -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests.log | cut -c1-300
