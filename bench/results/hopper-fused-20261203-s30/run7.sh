#!/bin/bash
# Session 30 run 7: the probe's attention timed in parts on block 0 (clock64: q staging, slot
# wait, scores, softmax, weighted sum; fused MLP, cluster 2, ctx 1024), default and amode 1.
set -u
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run7-build.log ) || { cat $OUT/run7-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b; do
  for v in "1024 0 0" "1024 0 1"; do
    set -- $v
    echo "== $shape ctx=$1 splits=$2 amode=$3" >> $OUT/run7-phases.log
    timeout 30 /tmp/stream_mma $shape 100 0 5 32 0 1 0 1 2 $1 $2 $3 >> $OUT/run7.jsonl 2>> $OUT/run7-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run7.jsonl
  done
done
cut -c1-200 $OUT/run7.jsonl; grep "==\|attention\|ATTN" $OUT/run7-phases.log
