#!/bin/bash
# Session 31 run 16: is O-proj's ~1.9 us of tiles compute or data arrival? The trace (default
# build: AIMPL 2, TMMA 1) now marks when the last O-proj slot's wait starts (the earlier slots
# computed), besides slot 0 ready and the last slot ready. Fused MLP, cluster 2, ctx 1024.
set -u
cd bench/probes/hopper_stream
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/t stream_mma.cu 2> $OUT/run16-build.log || { cat $OUT/run16-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b; do
  echo "== $shape" >> $OUT/run16-phases.log
  timeout 30 /tmp/t $shape 100 0 5 32 0 1 0 1 2 1024 >> $OUT/run16.jsonl 2>> $OUT/run16-phases.log || echo "FAILED $shape rc=$?" >> $OUT/run16.jsonl
done
cut -c1-400 $OUT/run16.jsonl
awk '/^== /{print} /attn|split|merge|oproj|mlp/{print}' $OUT/run16-phases.log
