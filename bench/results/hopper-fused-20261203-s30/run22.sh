#!/bin/bash
# Session 32 run 22: L2 lookahead (-DPF=KB: while the producer waits for a free ring slot it requests
# into L2, 16 KB at a time, the block's MLP weights of the layer in consumption order, up to PF KB
# per layer, armed at the layer's ATTN) on top of -DLL=1. Fused MLP, cluster 2, ctx 1024, AIMPL 2.
set -u
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
cd bench/probes/hopper_stream
for pf in 0 128 256 512 1024; do
  $B -DNO_TRACE -DLL=1 -DPF=$pf -o /tmp/pf$pf stream_mma.cu 2> $OUT/run22-build-pf$pf.log &
done
$B -DLL=1 -DPF=256 -o /tmp/tpf256 stream_mma.cu 2> $OUT/run22-build-tpf256.log &
$B -DLL=1 -o /tmp/tpf0 stream_mma.cu 2> $OUT/run22-build-tpf0.log &
wait
for b in pf0 pf128 pf256 pf512 pf1024 tpf256 tpf0; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run22-build-$b.log; exit 1; }; done
for shape in llama-3.2-1b qwen3-1.7b smollm2-135m; do
  for b in pf0 pf128 pf256 pf512 pf1024 pf0 pf128 pf256 pf512 pf1024 tpf0 tpf256; do
    echo "== $shape $b" >> $OUT/run22-phases.log
    echo "\"bin\": \"$b\"" >> $OUT/run22.jsonl
    timeout 12 /tmp/$b $shape 100 0 5 32 0 1 0 1 2 1024 0 0 2 0 0 >> $OUT/run22.jsonl 2>> $OUT/run22-phases.log || echo "FAILED $shape $b rc=$?" >> $OUT/run22.jsonl
  done
done
python3 - $OUT/run22.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, r["ll"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
awk '/^== .* tpf/{p=1} /^== .* pf/{p=0} p && (/^==/ || /split rel|merge|oproj input|oproj release|mlp|GATEUP|LMHEAD|QKV /)' $OUT/run22-phases.log | grep -v "prod "
