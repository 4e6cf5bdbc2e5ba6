# Session 29, call 3: run 2 made every program's run the same number of chunks (row_runs) and
# the step got slower, as if a program's time followed its chunk count more than its bytes.
# Fewer, larger chunks: Tiling.chunk 16384 (32 KB tiles; 3 stages = 64 KB in flight a
# program) and 16384 with 2 stages (32 KB in flight, as the default's 2 x 16 KB), on main's
# kernel; and the other way, tiles=2 (a program's rows in two tiles: smaller ones); A/B/C/D/A/B,
# ctx 1024, T = 1.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), r.get("blocks"), r.get("stages"), f.get("registers"), f.get("spills"), f.get("shared"), f.get("programs_per_sm"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:160])
PY
}
timeout 360 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --variants ";chunk=16384;chunk=16384,stages=2;tiles=2;;chunk=16384" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
# Then where run 1's one-block splits put Qwen3-1.7B's time: a traced step (tune --timeline)
# on main's kernel, then with run1-chunks.patch applied.
R=bench/results/monokernel-20261203-s29
tl() { timeout 100 python -m agentfast.kernels.monokernel.tune --shapes qwen3-1.7b --steps 50 --timeline --variants ";" > $OUT/tl-$1.log 2>&1; echo "$1 rc=$?"; mv $OUT/tune.json $OUT/tl-$1.json; mkdir -p $OUT/$1; mv $OUT/timeline-*.npz $OUT/$1/ 2>/dev/null
python3 - $OUT/tl-$1.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); print(r["variant"], r["step_us"])
        for k, v in (r.get("timeline") or {}).get("ops", {}).items():
            print("   ", k, {a: b for a, b in v.items() if a != "n"})
PY
}
tl main
(patch -s -p1 < $R/run1-chunks.patch || git apply $R/run1-chunks.patch) && echo applied
tl chunks
