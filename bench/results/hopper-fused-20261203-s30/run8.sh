#!/bin/bash
# PREPARED IN SESSION 30, NOT YET RUN (the device time ran out). The reworked attention compute
# (-DAIMPL=1: attn_scores_v2 / attn_sum_v2, a separate binary; it spills 16 bytes at 168
# registers) beside the measured one (AIMPL 0), fused MLP, cluster 2, ctx 1024; block 0's parts
# on stderr. Per-run timeouts keep a hang to 30 s.
# probe args: shape steps attn_ns stages stage_kb nodeps hint mode fuse cluster ctx splits amode aimpl
set -u
cd bench/probes/hopper_stream
for A in 0 1; do
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DAIMPL=$A -Xptxas -v -o /tmp/stream_mma_a$A stream_mma.cu 2> $OUT/run8-build-a$A.log || { cat $OUT/run8-build-a$A.log; exit 1; }
done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for v in "0 0" "1 0" "1 1" "0 0" "1 0"; do
    set -- $v
    echo "== $shape aimpl=$1 amode=$2" >> $OUT/run8-phases.log
    timeout 30 /tmp/stream_mma_a$1 $shape 100 0 5 32 0 1 0 1 2 1024 0 $2 $1 >> $OUT/run8.jsonl 2>> $OUT/run8-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run8.jsonl
  done
done
python3 - $OUT/run8.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "aimpl", r["aimpl"], "amode", r["amode"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep "==\|attention" $OUT/run8-phases.log
