#!/bin/bash
# Session 31 run 14: the matvec tile with the weights as mma's m operand (-DTMMA=1: half the mma
# count; run 13's trace put O-proj at ~0.85 us of compute per 32 KB slot) against TMMA 0; both
# AIMPL 2 and without the trace code; real attention at ctx 1024 and the stand-in (ctx 0).
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl omerge pkv
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DAIMPL=2 -DNO_TRACE"
cd bench/probes/hopper_stream
$B -DTMMA=0 -o /tmp/m0 stream_mma.cu 2> $OUT/run14-build-m0.log || { cat $OUT/run14-build-m0.log; exit 1; }
$B -DTMMA=1 -o /tmp/m1 stream_mma.cu 2> $OUT/run14-build-m1.log || { cat $OUT/run14-build-m1.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "m0 1024" "m1 1024" "m0 0" "m1 0" "m0 1024" "m1 1024"; do
    set -- $v
    echo "== $shape $1 ctx=$2" >> $OUT/run14-phases.log
    echo "\"bin\": \"$1\"" >> $OUT/run14.jsonl
    timeout 30 /tmp/$1 $shape 100 0 5 32 0 1 0 1 2 $2 0 0 2 0 0 >> $OUT/run14.jsonl 2>> $OUT/run14-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run14.jsonl
  done
done
python3 - $OUT/run14.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "ctx", r["ctx"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["copy_TBps"])
PY
