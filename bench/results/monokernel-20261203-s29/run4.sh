# Session 29, call 4: where Qwen3-1.7B's attention spends the ~3 us between "q, k, v ready"
# (mark 2) and "softmax done" (mark 3) of run 3's trace: marks 4-6 inside ops_attn.attn_run
# (O-proj merging: the ticket's marks are free) after the first block's keys and values are
# in registers (4), its scores (5) and its online step (6). Two traced steps (tune --timeline).
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 50 --timeline --variants ";" > $OUT/tl.log 2>&1; echo "rc=$?"; rm -f $OUT/timeline-*-1.npz
python3 - $OUT/tl.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); print(r["variant"], r["step_us"])
        for k, v in (r.get("timeline") or {}).get("ops", {}).items():
            print("   ", k, {a: b for a, b in v.items() if a != "n"})
PY
