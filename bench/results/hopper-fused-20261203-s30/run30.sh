#!/bin/bash
# Session 32 run 30: the probe's attention with RoPE (and, on Qwen3, the per-head q/k RMSNorm with
# weights) as the models and the Triton kernel do (-DROPE=1) vs without (-DROPE=0, the default so far:
# the figures of runs 17-29). The reference applies the same. LL 1, ctx 1024. NOT RUN in session 32
# (no device time left); ROPE is 0 by default until it has run: build r1 with -DROPE=1.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE"
cd bench/probes/hopper_stream
$B -DROPE=1 -o /tmp/r1 stream_mma.cu 2> $OUT/run30-build-r1.log &
$B -DROPE=0 -o /tmp/r0 stream_mma.cu 2> $OUT/run30-build-r0.log &
wait
for b in r1 r0; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run30-build-$b.log; exit 1; }; done
for sv in "llama-3.2-1b 5 2" "qwen3-1.7b 4 2" "smollm2-135m 5 1"; do
  set -- $sv
  for b in r1 r0 r1 r0; do
    echo "\"bin\": \"$b\"" >> $OUT/run30.jsonl
    timeout 12 /tmp/$b $1 100 0 $2 32 0 1 0 1 $3 1024 0 0 2 0 0 >> $OUT/run30.jsonl 2>> $OUT/run30-phases.log || echo "FAILED $1 $b rc=$?" >> $OUT/run30.jsonl
  done
done
python3 - $OUT/run30.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "rope", r["rope"], "qkn", r["qkn"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -h "FAILED\|error\|ROPE" $OUT/run30-phases.log | head -3
