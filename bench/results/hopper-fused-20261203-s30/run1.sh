#!/bin/bash
# Session 30 run 1: gate/up + down as one op (MLP) in the Hopper ring probe, with the down
# partial sums' fan-in through a thread-block cluster (DSMEM) or plain atomics, beside the
# 5-op chain, same call. args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster
set -u
cd bench/probes/hopper_stream
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run1-build.log || { cat $OUT/run1-build.log; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv > $OUT/run1-smi.txt
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "0 1" "1 1" "1 2" "1 4" "0 1" "1 2"; do
    set -- $v
    echo "== $shape fuse=$1 cluster=$2" >> $OUT/run1-phases.log
    timeout 120 /tmp/stream_mma $shape 100 0 5 32 0 1 0 $1 $2 >> $OUT/run1.jsonl 2>> $OUT/run1-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run1.jsonl
  done
done
cat $OUT/run1.jsonl
