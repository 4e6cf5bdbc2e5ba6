#!/bin/bash
# Session 32 run 29: registers by warpgroup. -DWG_REGS=1: a producer warpgroup (4 warps, 3 exit at once)
# that gives registers back (setmaxnreg.dec to WG_PROD) while the 8 consumer warps take them
# (setmaxnreg.inc to WG_CONS); the default has 9 warps, so one SM sub-partition holds 3 and ptxas
# stops at 168 registers (48 bytes of spills). LL 1, ctx 1024.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE"
cd bench/probes/hopper_stream
$B -o /tmp/w0 stream_mma.cu 2> $OUT/run29-build-w0.log &
$B -DWG_REGS=1 -DWG_PROD=88 -DWG_CONS=208 -o /tmp/w88 stream_mma.cu 2> $OUT/run29-build-w88.log &
$B -DWG_REGS=1 -DWG_PROD=64 -DWG_CONS=224 -o /tmp/w64 stream_mma.cu 2> $OUT/run29-build-w64.log &
$B -DWG_REGS=1 -DWG_PROD=40 -DWG_CONS=232 -o /tmp/w40 stream_mma.cu 2> $OUT/run29-build-w40.log &
wait
for b in w0 w88 w64 w40; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run29-build-$b.log; exit 1; }; done
for sv in "llama-3.2-1b 5 2" "qwen3-1.7b 4 2" "smollm2-135m 5 1"; do
  set -- $sv
  for b in w0 w88 w64 w40 w0 w88 w64 w40; do
    echo "\"bin\": \"$b\"" >> $OUT/run29.jsonl
    timeout 12 /tmp/$b $1 100 0 $2 32 0 1 0 1 $3 1024 0 0 2 0 0 >> $OUT/run29.jsonl 2>> $OUT/run29-phases.log || echo "FAILED $1 $b rc=$?" >> $OUT/run29.jsonl
  done
done
python3 - $OUT/run29.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "stages", r["stages"], "cl", r["cluster"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -h "FAILED\|error" $OUT/run29-phases.log | head -3
