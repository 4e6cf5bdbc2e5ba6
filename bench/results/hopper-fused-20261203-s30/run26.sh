#!/bin/bash
# Session 32 run 26: the probe (LL 1) across contexts (128, 1024, 4096, 32768) on Llama-3.2-1B and
# Qwen3-1.7B, and Qwen3-8B at 1024, beside the Triton kernel's tune at the same contexts, same call.
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
( cd bench/probes/hopper_stream && nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE -o /tmp/ll1 stream_mma.cu 2> $OUT/run26-build.log ) || { cat $OUT/run26-build.log; exit 1; }
run() {  # shape ctx stages
  echo "== $1 ctx=$2 stages=$3" >> $OUT/run26-phases.log
  timeout 30 /tmp/ll1 $1 100 0 $3 32 0 1 0 1 2 $2 0 0 2 0 0 >> $OUT/run26.jsonl 2>> $OUT/run26-phases.log || echo "FAILED $1 $2 $3 rc=$?" >> $OUT/run26.jsonl
}
for shape in llama-3.2-1b qwen3-1.7b; do for ctx in 128 4096 32768 1024; do run $shape $ctx 5; done; done
run qwen3-1.7b 4096 4; run qwen3-1.7b 32768 4
run qwen3-8b 1024 5; run qwen3-8b 1024 4; run qwen3-8b 1024 3
python3 - $OUT/run26.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], "ctx", r["ctx"], "stages", r["stages"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -i "shared memory\|error" $OUT/run26-phases.log | head -5
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b --steps 150 --contexts 128,4096,32768 > $OUT/run26-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run26-tune.json 2>/dev/null
timeout 200 python -m agentfast.kernels.monokernel.tune --shapes qwen3-8b --steps 100 > $OUT/run26-tune8b.log 2>&1; echo "tune 8b rc=$?"
mv $OUT/tune.json $OUT/run26-tune8b.json 2>/dev/null
grep "step_us" $OUT/run26-tune.log $OUT/run26-tune8b.log | cut -c1-150
