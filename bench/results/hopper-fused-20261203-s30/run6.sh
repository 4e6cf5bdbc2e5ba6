#!/bin/bash
# Session 30 run 6: the probe's attention without its compute (amode 2: K/V slots waited for
# and freed, no scores / softmax / sum, no merge) beside amode 1 (no merge), the default and
# the stand-in; fused MLP, cluster 2, ctx 1024.
set -u
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run6-build.log ) || { cat $OUT/run6-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b; do
  for v in "0 0 0" "1024 0 0" "1024 0 1" "1024 0 2" "1024 0 0"; do
    set -- $v
    echo "== $shape ctx=$1 splits=$2 amode=$3" >> $OUT/run6-phases.log
    timeout 40 /tmp/stream_mma $shape 100 0 5 32 0 1 0 1 2 $1 $2 $3 >> $OUT/run6.jsonl 2>> $OUT/run6-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run6.jsonl
  done
done
python3 - $OUT/run6.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "ctx", r["ctx"], "splits", r["splits"], "amode", r["amode"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"])
PY
