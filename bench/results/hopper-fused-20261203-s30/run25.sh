#!/bin/bash
# Session 32 run 25: with the LL hand-over (LL 1, the default now) the chain changed; do the launch
# knobs still sit right? stages 5 / 4, cluster 2 / 1 / 4, L2 evict-first hint on / off. Fused MLP, ctx 1024.
set -u
cd bench/probes/hopper_stream
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE -o /tmp/ll1 stream_mma.cu 2> $OUT/run25-build.log || { cat $OUT/run25-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "5 1 2" "4 1 2" "5 1 1" "5 0 2" "5 1 4" "5 1 2"; do
    set -- $v
    echo "== $shape stages=$1 hint=$2 cluster=$3" >> $OUT/run25-phases.log
    echo "\"cfg\": \"$1 $2 $3\"" >> $OUT/run25.jsonl
    timeout 12 /tmp/ll1 $shape 100 0 $1 32 0 $2 0 1 $3 1024 0 0 2 0 0 >> $OUT/run25.jsonl 2>> $OUT/run25-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run25.jsonl
  done
done
python3 - $OUT/run25.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"cfg"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "stages/hint/cluster", b, "blocks", r["blocks"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"])
PY
