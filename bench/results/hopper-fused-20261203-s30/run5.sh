#!/bin/bash
# Session 30 run 5: where the probe's attention goes (fused MLP, cluster 2, ctx 1024): the
# stand-in (ctx 0), real attention with nb / nKV splits per kv head (default), 8 and 4 splits,
# and the default without the ticket and merge (amode 1: timing only, wrong by construction).
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode
set -u
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run5-build.log ) || { cat $OUT/run5-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b; do
  for v in "0 0 0" "1024 0 0" "1024 8 0" "1024 4 0" "1024 0 1" "1024 0 0"; do
    set -- $v
    echo "== $shape ctx=$1 splits=$2 amode=$3" >> $OUT/run5-phases.log
    timeout 40 /tmp/stream_mma $shape 100 0 5 32 0 1 0 1 2 $1 $2 $3 >> $OUT/run5.jsonl 2>> $OUT/run5-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run5.jsonl
  done
done
python3 - $OUT/run5.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "ctx", r["ctx"], "splits", r["splits"], "amode", r["amode"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"])
PY
