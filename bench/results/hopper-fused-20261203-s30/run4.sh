#!/bin/bash
# Session 30 run 4: run 3 again after its hang (Qwen3-1.7B: a score group's shuffle with part of
# the warp out of the loop, when a sub-chunk held 1-2 keys; fixed: whole warps loop), then the
# Triton monokernel (`tune`, ctx 1024, T = 1) in the same call.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run4-build.log ) || { cat $OUT/run4-build.log; exit 1; }
for shape in qwen3-1.7b smollm2-135m llama-3.2-1b; do
  for v in "0 1" "1 2" "1 1"; do
    set -- $v
    echo "== $shape fuse=$1 cluster=$2 ctx=1024" >> $OUT/run4-phases.log
    timeout 40 /tmp/stream_mma $shape 100 0 5 32 0 1 0 $1 $2 1024 >> $OUT/run4.jsonl 2>> $OUT/run4-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run4.jsonl
  done
done
python3 - $OUT/run4.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "fuse", r["fuse"], "cl", r["cluster"], "nb", r["blocks"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["gap_at_first_diff"])
PY
timeout 150 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/run4-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run4-tune.json 2>/dev/null
grep "step_us" $OUT/run4-tune.log | cut -c1-120
