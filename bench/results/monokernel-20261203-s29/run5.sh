# Session 29, call 5: the machine code of attn_run (offline sm_90 compile, triton 3.6) converts
# the layout of the first block of cached keys and values right after its loads, before the
# wait for QKV, so the program waits for those HBM loads before it starts polling. attn_fold=2:
# those loads after the wait instead, issued with q, k and v. A/B/C/A/B/C (ctx 1024, T = 1);
# C on Llama is attn_run (attn_wait_loop=0) with the change. Then one traced step of
# Qwen3-1.7B with attn_fold=2 (marks 4-6 as in run 4).
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
        for k, v in (r.get("timeline") or {}).get("ops", {}).items():
            print("   ", k, {a: b for a, b in v.items() if a != "n"})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:160])
PY
}
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b --steps 150 --variants ";attn_fold=2;attn_wait_loop=0,attn_fold=2;;attn_fold=2;attn_wait_loop=0,attn_fold=2" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 50 --timeline --variants "attn_fold=2" > $OUT/tl.log 2>&1; echo rc=$?; mv $OUT/tune.json $OUT/tl.json; rm -f $OUT/timeline-*.npz; show $OUT/tl.log
