#!/bin/bash
# Session 31 run 10: omerge with one round of merge loads over all threads, blocks
# not straddling kv heads, hd loaded before the wait (run 9: the first omerge was slower).
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl omerge
set -u
cd bench/probes/hopper_stream
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/stream_mma stream_mma.cu 2> $OUT/run10-build.log || { cat $OUT/run10-build.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "0 0" "1 0" "0 0" "1 0"; do
    set -- $v
    echo "== $shape omerge=$1 splits=$2" >> $OUT/run10-phases.log
    timeout 30 /tmp/stream_mma $shape 100 0 5 32 0 1 0 1 2 1024 $2 0 0 $1 >> $OUT/run10.jsonl 2>> $OUT/run10-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run10.jsonl
  done
done
python3 - $OUT/run10.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "omerge", r["omerge"], "splits", r["splits"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -A10 "==" $OUT/run10-phases.log | grep -v "phases,\|SM clock\|QKV\|GATEUP\|DOWN\|LMHEAD\|attention,"
