# Session 29, call 6: Tiling.kv_prefetch: a program's QKV record asks L2 (sm_90
# cp.async.bulk.prefetch.L2) for the cached keys and values of its next record's ATTN tiles,
# so attention reads them from L2 after QKV instead of HBM (runs 4-5: the first block's HBM
# load is what attention waits for). GPU tests (a bf16 kv_prefetch case among them), then
# A/B/A/B (ctx 1024, T = 1) on Qwen3-1.7B and Llama-3.2-1B, then one traced step of each
# variant on Qwen3-1.7B.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
        for k, v in (r.get("timeline") or {}).get("ops", {}).items():
            if k in ("QKV", "ATTN", "OPROJ_M"):
                print("   ", k, {a: b for a, b in v.items() if a != "n"})
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:160])
PY
}
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -3
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b,llama-3.2-1b --steps 150 --variants ";kv_prefetch=1;;kv_prefetch=1" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
timeout 100 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 50 --timeline --variants ";kv_prefetch=1" > $OUT/tl.log 2>&1; echo rc=$?; mv $OUT/tune.json $OUT/tl.json; rm -f $OUT/timeline-*.npz; show $OUT/tl.log
