#!/bin/bash
# Session 32 run 18: what the op release costs. The release is bar.sync, then thread 0's
# __threadfence() and red.release.gpu; -DNO_FENCE drops the __threadfence (the release add is
# cumulative over the block's writes seen through bar.sync). SASS counts of MEMBAR show whether
# red.release carries its own. Traced runs mark O-proj's release after the bar.sync (18) and after
# the fence (19). -DSPLIT_AR: the attention split's ticket as one atom.acq_rel (no fences). Fused MLP, cluster 2, ctx 1024, AIMPL 2.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -o /tmp/nt stream_mma.cu 2> $OUT/run18-build-nt.log &
$B -DNO_TRACE -DNO_FENCE -o /tmp/ntnf stream_mma.cu 2> $OUT/run18-build-ntnf.log &
$B -DNO_TRACE -DNO_FENCE -DSPLIT_AR -o /tmp/ntar stream_mma.cu 2> $OUT/run18-build-ntar.log &
$B -o /tmp/t stream_mma.cu 2> $OUT/run18-build-t.log &
$B -DNO_FENCE -o /tmp/tnf stream_mma.cu 2> $OUT/run18-build-tnf.log &
wait
for b in nt ntnf ntar t tnf; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run18-build-$b.log; exit 1; }; done
for b in nt ntnf ntar; do
  echo "== $b MEMBAR count: $(cuobjdump -sass /tmp/$b | grep -c MEMBAR)" >> $OUT/run18-sass.txt
  cuobjdump -sass /tmp/$b | grep -B3 -A1 "RED.E.ADD.*STRONG.GPU\|REDG.E.ADD.*STRONG.GPU" | head -40 >> $OUT/run18-sass.txt
done
for shape in llama-3.2-1b qwen3-1.7b; do
  for b in nt ntnf ntar nt ntnf ntar t tnf; do
    echo "== $shape $b" >> $OUT/run18-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run18.jsonl
    timeout 30 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run18.jsonl 2>> $OUT/run18-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run18.jsonl
  done
done
python3 - $OUT/run18.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
head -c 3000 $OUT/run18-sass.txt
awk '/^== .* t/{p=1} /^== .* nt/{p=0} p && (/^==/ || /split|merge|oproj|mlp w/)' $OUT/run18-phases.log
