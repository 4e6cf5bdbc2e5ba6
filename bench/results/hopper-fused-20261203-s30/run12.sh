#!/bin/bash
# Session 31 run 12: AIMPL 2 (attention on the tensor cores) with 5 and 6 ring stages (fuse now
# sizes the input buffer by H, which frees 24 KB of shared memory on Llama), omerge 0 / 1; the trace
# now has when the producer has issued all O-proj tiles, when O-proj's first slot is ready and when
# attention's q is loaded. Fused MLP, cluster 2, ctx 1024.
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl omerge pkv
set -u
cd bench/probes/hopper_stream
for A in 0 2; do
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DAIMPL=$A -Xptxas -v -o /tmp/stream_mma_a$A stream_mma.cu 2> $OUT/run12-build-a$A.log || { cat $OUT/run12-build-a$A.log; exit 1; }
done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "2 5 0" "2 6 0" "2 5 1" "2 6 1" "0 5 0" "2 5 0" "2 6 0"; do
    set -- $v
    echo "== $shape aimpl=$1 stages=$2 omerge=$3" >> $OUT/run12-phases.log
    timeout 30 /tmp/stream_mma_a$1 $shape 100 0 $2 32 0 1 0 1 2 1024 0 0 $1 $3 0 >> $OUT/run12.jsonl 2>> $OUT/run12-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run12.jsonl
  done
done
python3 - $OUT/run12.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "aimpl", r["aimpl"], "stages", r["stages"], "omerge", r["omerge"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], "smem", r["smem"])
PY
