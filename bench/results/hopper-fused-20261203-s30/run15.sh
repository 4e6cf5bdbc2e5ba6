#!/bin/bash
# Session 31 run 15: the probe's best build (AIMPL 2 tensor-core attention, TMMA 1 matvec tiles,
# no trace code) beside the Triton monokernel (`tune`, ctx 1024, T = 1) in the same call.
# Fused MLP, cluster 2, ctx 1024, 5 stages; then the stand-in attention (ctx 0) for the chain's floor.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DNO_TRACE -Xptxas -v -o /tmp/best stream_mma.cu 2> $OUT/run15-build.log ) || { cat $OUT/run15-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for ctx in 1024 1024 0; do
    echo "== $shape ctx=$ctx" >> $OUT/run15-phases.log
    timeout 30 /tmp/best $shape 100 0 5 32 0 1 0 1 2 $ctx >> $OUT/run15.jsonl 2>> $OUT/run15-phases.log || echo "FAILED $shape $ctx rc=$?" >> $OUT/run15.jsonl
  done
done
python3 - $OUT/run15.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "ctx", r["ctx"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["copy_TBps"])
PY
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/run15-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run15-tune.json 2>/dev/null
grep "step_us" $OUT/run15-tune.log | cut -c1-160
