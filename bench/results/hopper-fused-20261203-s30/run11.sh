#!/bin/bash
# Session 31 run 11: does the producer's ld.acquire (waiting for the previous step's K/V) stall
# behind its own bulk copies in flight? pkv 0 acquire polls (as before), 1 relaxed polls then
# fence.acq_rel, 2 no wait (timing only); the one-layer trace now has the producer's times.
# AIMPL 2 (new: attention on the tensor cores, attn_mma, swizzled cache rows) and AIMPL 1 (run 8's
# reworked compute) with the trace. Fused MLP, cluster 2, ctx 1024.
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl omerge pkv
set -u
cd bench/probes/hopper_stream
for A in 0 1 2; do
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DAIMPL=$A -Xptxas -v -o /tmp/stream_mma_a$A stream_mma.cu 2> $OUT/run11-build-a$A.log || { cat $OUT/run11-build-a$A.log; exit 1; }
done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "0 0 0" "0 0 1" "0 0 2" "2 0 0" "2 0 1" "2 1 1" "1 0 1" "0 0 0" "2 0 1"; do
    set -- $v
    echo "== $shape aimpl=$1 omerge=$2 pkv=$3" >> $OUT/run11-phases.log
    timeout 30 /tmp/stream_mma_a$1 $shape 100 0 5 32 0 1 0 1 2 1024 0 0 $1 $2 $3 >> $OUT/run11.jsonl 2>> $OUT/run11-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run11.jsonl
  done
done
python3 - $OUT/run11.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "aimpl", r["aimpl"], "omerge", r["omerge"], "pkv", r["pkv"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -A16 "==" $OUT/run11-phases.log | grep -v "phases,\|SM clock\|QKV\|GATEUP\|DOWN\|LMHEAD\|attention,\|ATTN\|OPROJ"
