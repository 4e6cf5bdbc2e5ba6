#!/bin/bash
# Session 31 run 17: omerge 2, a cluster of 16 per kv head (128 blocks): the splits' partials stay
# in shared memory, an mbarrier per CTA counts the cluster's splits, O-proj merges through DSMEM;
# beside cluster 2 / omerge 0 and cluster 16 / omerge 0 (no-trace build), then traced runs
# (cluster 2 with the O-proj slot marks of run 16, and omerge 2). Fused MLP, ctx 1024.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -o /tmp/nt stream_mma.cu 2> $OUT/run17-build-nt.log || { cat $OUT/run17-build-nt.log; exit 1; }
$B -o /tmp/t stream_mma.cu 2> $OUT/run17-build-t.log || { cat $OUT/run17-build-t.log; exit 1; }
for shape in llama-3.2-1b qwen3-1.7b; do
  for v in "nt 2 0" "nt 16 0" "nt 16 2" "nt 2 0" "nt 16 2" "t 2 0" "t 16 2"; do
    set -- $v
    echo "== $shape $1 cluster=$2 omerge=$3" >> $OUT/run17-phases.log
    echo "\"bin\": \"$1\"" >> $OUT/run17.jsonl
    timeout 30 /tmp/$1 $shape 100 0 5 32 0 1 0 1 $2 1024 0 0 2 $3 0 >> $OUT/run17.jsonl 2>> $OUT/run17-phases.log || echo "FAILED $shape $v rc=$?" >> $OUT/run17.jsonl
  done
done
python3 - $OUT/run17.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "cl", r["cluster"], "nb", r["blocks"], "omerge", r["omerge"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -i "error\|cluster\|omerge" $OUT/run17-phases.log | head
awk '/^== .* t /{p=1} /^== .* nt /{p=0} p && (/^==/ || /split|merge|oproj|mlp w|attn q/)' $OUT/run17-phases.log
