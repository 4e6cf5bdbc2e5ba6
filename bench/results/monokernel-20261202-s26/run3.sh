# Session 26, call 3: TMA tiles (Tiling.tma) with more tiles requested before the wait (per-op
# stage caps of the TMA ops above 3): a TMA copy in flight does not hold up the poll (run 1), so
# deeper prefetch may now pay. ctx 1024, T = 1, A/B/../A; a traced step of two of them (Llama).
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
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants ";tma=1,stages_gu=4,stages_dn=4,stages_qkv=4;tma=1,stages_gu=5,stages_dn=5,stages_qkv=5;tma=1,stages_gu=6,stages_dn=6,stages_qkv=5;stages_gu=5,stages_dn=5,stages_qkv=5;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log; mv $OUT/tune.json $OUT/tune_main.json
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b --steps 50 --timeline --variants "tma=1,stages_gu=5,stages_dn=5,stages_qkv=5;tma=1,stages_gu=6,stages_dn=6,stages_qkv=5" > $OUT/tune_tl.log 2>&1; echo tl rc=$?; show $OUT/tune_tl.log
ls $OUT
