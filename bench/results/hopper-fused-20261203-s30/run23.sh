#!/bin/bash
# Session 32 run 23: the probe's new default (LL 1: LL hand-over of q/k/v, the merged attention and
# hm; no fence before the release adds; acq_rel ticket) and LL 0, beside the Triton monokernel
# (`tune`, ctx 1024, T = 1) in the same call. Fused MLP, cluster 2, ctx 1024, 5 stages.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -o /tmp/ll1 stream_mma.cu 2> $OUT/run23-build-ll1.log &
$B -DNO_TRACE -DLL=0 -o /tmp/ll0 stream_mma.cu 2> $OUT/run23-build-ll0.log &
wait
cd ../../..
for b in ll1 ll0; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run23-build-$b.log; exit 1; }; done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for b in ll1 ll0 ll1 ll0; do
    echo "== $shape $b" >> $OUT/run23-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run23.jsonl
    timeout 12 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run23.jsonl 2>> $OUT/run23-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run23.jsonl
  done
done
python3 - $OUT/run23.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["ll"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["copy_TBps"])
PY
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/run23-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run23-tune.json 2>/dev/null
grep "step_us" $OUT/run23-tune.log | cut -c1-160
