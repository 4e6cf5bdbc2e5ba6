#!/bin/bash
# Prepared in session 32, NOT RUN: the like-for-like comparison in one call. The probe with -DROPE=1
# (RoPE on q and the new key, Qwen3's per-head q/k RMSNorm; the reference does the same) and with
# -DROPE=0, interleaved with the Triton kernel's tune (which does RoPE and q/k norm), ctx 1024, T = 1.
# Carry .whl_core (`mkdir -p .git/info; bash bench/prepare_device_carry.sh` first).
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE"
( cd bench/probes/hopper_stream && { $B -DROPE=1 -o /tmp/r1 stream_mma.cu 2> $OUT/run31-build-r1.log &
  $B -DROPE=0 -o /tmp/r0 stream_mma.cu 2> $OUT/run31-build-r0.log & wait; } )
for b in r1 r0; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run31-build-$b.log; exit 1; }; done
run() {  # binary shape stages cluster
  echo "\"bin\": \"$1\"" >> $OUT/run31.jsonl
  timeout 12 /tmp/$1 $2 100 0 $3 32 0 1 0 1 $4 1024 0 0 2 0 0 >> $OUT/run31.jsonl 2>> $OUT/run31-phases.log || echo "FAILED $1 $2 rc=$?" >> $OUT/run31.jsonl
}
probes() { for b in r1 r0; do run $b llama-3.2-1b 5 2; run $b qwen3-1.7b 4 2; run $b smollm2-135m 5 1; done; }
for r in 1 2; do
  probes
  timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/run31-tune$r.log 2>&1; echo "tune $r rc=$?"
  mv $OUT/tune.json $OUT/run31-tune$r.json 2>/dev/null
done
probes
python3 - $OUT/run31.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "rope", r["rope"], "qkn", r["qkn"], "stages", r["stages"], "cl", r["cluster"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -h "step_us" $OUT/run31-tune1.log $OUT/run31-tune2.log | cut -c1-110
