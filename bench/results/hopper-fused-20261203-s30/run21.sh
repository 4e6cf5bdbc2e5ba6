#!/bin/bash
# Session 32 run 21: -DLL=1 with the residual built by adds only (two buffers by step parity: no
# add has to be ordered after a store) and -DLL=2 (also the attention splits' partials as words:
# no ticket, the head's last split merges) beside the default (LL 0) and the relaxed upper bound.
# Fused MLP, cluster 2, ctx 1024, AIMPL 2.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -o /tmp/nt stream_mma.cu 2> $OUT/run21-build-nt.log &
$B -DNO_TRACE -DLL=1 -o /tmp/ntll stream_mma.cu 2> $OUT/run21-build-ntll.log &
$B -DNO_TRACE -DRELAXED_REL -o /tmp/ntrx stream_mma.cu 2> $OUT/run21-build-ntrx.log &
$B -DNO_TRACE -DLL=2 -o /tmp/ntll2 stream_mma.cu 2> $OUT/run21-build-ntll2.log &
$B -DLL=2 -o /tmp/tll2 stream_mma.cu 2> $OUT/run21-build-tll2.log &
wait
for b in nt ntll ntll2 ntrx tll2; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run21-build-$b.log; exit 1; }; done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for b in nt ntll ntll2 ntrx nt ntll ntll2 ntrx tll2; do
    echo "== $shape $b" >> $OUT/run21-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run21.jsonl
    timeout 12 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run21.jsonl 2>> $OUT/run21-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run21.jsonl
  done
done
python3 - $OUT/run21.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["ll"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
awk '/^== .* t/{p=1} /^== .* nt/{p=0} p && (/^==/ || /split|merge|oproj|mlp|phases|QKV|ATTN|OPROJ|GATEUP|DOWN|LMHEAD/)' $OUT/run21-phases.log | grep -v "prod "
