#!/bin/bash
# Session 32 run 28: the attention merge in one L2 round trip: the merging thread's partials of the
# first MERGE_PV splits requested with the splits' (m, l), before the weights are computed (the old
# merge: (m, l), then two rounds of 8 partials). -DOLD_MERGE vs MERGE_PV 8 / 16. LL 1, ctx 1024.
# Slower (spills): not kept; the variant is run28-merge-pv.patch (apply to stream_mma.cu at 65c50fb),
# and the old merge is the only one in the source now (-DOLD_MERGE was its name in this run).
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE"
cd bench/probes/hopper_stream
$B -DOLD_MERGE -o /tmp/old stream_mma.cu 2> $OUT/run28-build-old.log &
$B -DMERGE_PV=8 -o /tmp/pv8 stream_mma.cu 2> $OUT/run28-build-pv8.log &
$B -DMERGE_PV=16 -o /tmp/pv16 stream_mma.cu 2> $OUT/run28-build-pv16.log &
wait
for b in old pv8 pv16; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run28-build-$b.log; exit 1; }; done
for sv in "llama-3.2-1b 5 2" "qwen3-1.7b 4 2" "smollm2-135m 5 1"; do
  set -- $sv
  for b in old pv8 pv16 old pv8 pv16; do
    echo "\"bin\": \"$b\"" >> $OUT/run28.jsonl
    timeout 12 /tmp/$b $1 100 0 $2 32 0 1 0 1 $3 1024 0 0 2 0 0 >> $OUT/run28.jsonl 2>> $OUT/run28-phases.log || echo "FAILED $1 $b rc=$?" >> $OUT/run28.jsonl
  done
done
python3 - $OUT/run28.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "stages", r["stages"], "cl", r["cluster"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
