#!/bin/bash
# Session 32 run 20: -DLL=1 (QKV -> attention, merge -> O-proj, O-proj -> MLP hand over (value,
# epoch) words that the readers spin on; those three ops release without a fence) beside the new
# default (run 18's no fence before the release add, acq_rel ticket) and run 19's relaxed upper
# bound. Fused MLP, cluster 2, ctx 1024, AIMPL 2.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -o /tmp/nt stream_mma.cu 2> $OUT/run20-build-nt.log &
$B -DNO_TRACE -DLL=1 -o /tmp/ntll stream_mma.cu 2> $OUT/run20-build-ntll.log &
$B -DNO_TRACE -DRELAXED_REL -o /tmp/ntrx stream_mma.cu 2> $OUT/run20-build-ntrx.log &
$B -o /tmp/t stream_mma.cu 2> $OUT/run20-build-t.log &
$B -DLL=1 -o /tmp/tll stream_mma.cu 2> $OUT/run20-build-tll.log &
wait
for b in nt ntll ntrx t tll; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run20-build-$b.log; exit 1; }; done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for b in nt ntll ntrx nt ntll ntrx t tll; do
    echo "== $shape $b" >> $OUT/run20-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run20.jsonl
    timeout 12 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run20.jsonl 2>> $OUT/run20-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run20.jsonl
  done
done
python3 - $OUT/run20.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["ll"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
awk '/^== .* t/{p=1} /^== .* nt/{p=0} p && (/^==/ || /split|merge|oproj|mlp|phases|QKV|ATTN|OPROJ|GATEUP|DOWN|LMHEAD/)' $OUT/run20-phases.log | grep -v "prod "
