#!/bin/bash
# Session 32 run 19: how much would releases without a fence save? -DRELAXED_REL (timing only:
# the op releases and the attention split's ticket relaxed, no fence: the stores before them are
# not ordered) beside run 18's best (-DNO_FENCE -DSPLIT_AR). Fused MLP, cluster 2, ctx 1024, AIMPL 2.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
$B -DNO_TRACE -DNO_FENCE -DSPLIT_AR -o /tmp/ntar stream_mma.cu 2> $OUT/run19-build-ntar.log &
$B -DNO_TRACE -DNO_FENCE -DSPLIT_AR -DRELAXED_REL -o /tmp/ntrx stream_mma.cu 2> $OUT/run19-build-ntrx.log &
$B -DNO_FENCE -DSPLIT_AR -o /tmp/tar stream_mma.cu 2> $OUT/run19-build-tar.log &
$B -DNO_FENCE -DSPLIT_AR -DRELAXED_REL -o /tmp/trx stream_mma.cu 2> $OUT/run19-build-trx.log &
wait
for b in ntar ntrx tar trx; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run19-build-$b.log; exit 1; }; done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for b in ntar ntrx ntar ntrx tar trx; do
    echo "== $shape $b" >> $OUT/run19-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run19.jsonl
    timeout 30 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run19.jsonl 2>> $OUT/run19-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run19.jsonl
  done
done
python3 - $OUT/run19.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
awk '/^== .* t/{p=1} /^== .* nt/{p=0} p && (/^==/ || /split|merge|oproj|mlp|phases|QKV|ATTN|OPROJ|GATEUP|DOWN|LMHEAD/)' $OUT/run19-phases.log | grep -v "prod "
