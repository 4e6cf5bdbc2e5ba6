#!/bin/bash
# Session 30 run 2: the probe with REAL T = 1 attention (ctx 1024 cached keys, split over
# nb / nKV splits per kv head, K/V through the ring, a ticket-merge per head) beside the
# 5-op chain, then the Triton monokernel (`tune`, ctx 1024, T = 1) in the same call.
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx
set -u
R=bench/results/hopper-fused-20261203-s30
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run2-build.log ) || { cat $OUT/run2-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "0 1" "1 2" "1 1" "0 1" "1 2"; do
    set -- $v
    echo "== $shape fuse=$1 cluster=$2 ctx=1024" >> $OUT/run2-phases.log
    timeout 120 /tmp/stream_mma $shape 100 0 5 32 0 1 0 $1 $2 1024 >> $OUT/run2.jsonl 2>> $OUT/run2-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run2.jsonl
  done
done
python3 - $OUT/run2.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "fuse", r["fuse"], "cl", r["cluster"], "nb", r["blocks"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["gap_at_first_diff"])
PY
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/run2-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run2-tune.json 2>/dev/null
grep -v "^ " $OUT/run2-tune.log | tail -12
