#!/bin/bash
# Session 32 run 27: probe (LL 1) and Triton kernel (tune) interleaved in one call, twice, at ctx 1024
# (run 26's machine put them closer than run 23's); then the probe at ctx 32768 (its reference
# attention now allowed the shared memory).
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE -o /tmp/ll1 stream_mma.cu 2> $OUT/run27-build.log ) || { cat $OUT/run27-build.log; exit 1; }
run() {  # shape ctx stages
  echo "== $1 ctx=$2 stages=$3" >> $OUT/run27-phases.log
  timeout 30 /tmp/ll1 $1 100 0 $3 32 0 1 0 1 2 $2 0 0 2 0 0 >> $OUT/run27.jsonl 2>> $OUT/run27-phases.log || echo "FAILED $1 $2 $3 rc=$?" >> $OUT/run27.jsonl
}
probes() { run llama-3.2-1b 1024 5; run llama-3.2-1b 1024 5; run qwen3-1.7b 1024 5; run qwen3-1.7b 1024 4; run qwen3-1.7b 1024 4; }
for r in 1 2; do
  probes
  timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 > $OUT/run27-tune$r.log 2>&1; echo "tune $r rc=$?"
  mv $OUT/tune.json $OUT/run27-tune$r.json 2>/dev/null
done
probes
run llama-3.2-1b 32768 5; run qwen3-1.7b 32768 4
python3 - $OUT/run27.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "ctx", r["ctx"], "stages", r["stages"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"], r["copy_TBps"])
PY
grep -h "step_us" $OUT/run27-tune1.log $OUT/run27-tune2.log | cut -c1-110
