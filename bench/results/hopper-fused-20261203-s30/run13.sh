#!/bin/bash
# Session 31 run 13: where did the default path's ~35 us (Llama, runs 8 -> 11) go? The probe as
# session 30 left it (commit 0b9833a, carried as .s30/stream_mma_s30.cu) beside HEAD built with
# and without the trace code (-DNO_TRACE), AIMPL 0 and 2; the trace has O-proj's last slot ready.
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl omerge pkv
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
$B -o /tmp/s30 .s30/stream_mma_s30.cu 2> $OUT/run13-build-s30.log || { cat $OUT/run13-build-s30.log; exit 1; }
cd bench/probes/hopper_stream
$B -DAIMPL=0 -o /tmp/a0 stream_mma.cu 2> $OUT/run13-build-a0.log || exit 1
$B -DAIMPL=0 -DNO_TRACE -o /tmp/a0nt stream_mma.cu 2> $OUT/run13-build-a0nt.log || exit 1
$B -DAIMPL=2 -o /tmp/a2 stream_mma.cu 2> $OUT/run13-build-a2.log || exit 1
$B -DAIMPL=2 -DNO_TRACE -o /tmp/a2nt stream_mma.cu 2> $OUT/run13-build-a2nt.log || exit 1
for shape in llama-3.2-1b qwen3-1.7b; do
  for v in s30 a0 a0nt a2 a2nt s30 a0nt a2nt; do
    A=0; [ ${v:0:2} = a2 ] && A=2
    X="$shape 100 0 5 32 0 1 0 1 2 1024 0 0 $A"; [ $v = s30 ] || X="$X 0 0"
    echo "== $shape $v" >> $OUT/run13-phases.log
    echo "\"bin\": \"$v\"" >> $OUT/run13.jsonl
    timeout 30 /tmp/$v $X >> $OUT/run13.jsonl 2>> $OUT/run13-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run13.jsonl
  done
done
python3 - $OUT/run13.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["copy_TBps"])
PY
