#!/bin/bash
# Session 33, one call: (a) the probe's RoPE with cos / sin and the q/k norm weights loaded into
# registers before the q/k/v wait (r1n) vs session 32's RoPE (r1o: git show 6bac779's source, cos /
# sin through shared memory, the norm weights read after the wait) vs no RoPE (r0); (b) the Triton
# kernel with its releases unfenced per opcode (tune relaxed=M, timing only) to find which hand-overs
# the fence costs most: 2 QKV, 4 ATTN, 4096 OPROJ_M, 16 GATEUP, 32 DOWN, 192 LMHEAD + SAMPLE.
# Carry .whl_core and .oldsrc (6bac779's stream_mma.cu as old.cu, where the copy has no git history).
set -u
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
B="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DNO_TRACE"
S=bench/probes/hopper_stream/stream_mma.cu
git show 6bac779:$S > /tmp/old.cu 2>/dev/null || cp .oldsrc/old.cu /tmp/old.cu  # (carried .oldsrc)
{ $B -DROPE=1 -o /tmp/r1n $S 2> $OUT/run32-build-r1n.log & $B -DROPE=1 -o /tmp/r1o /tmp/old.cu 2> $OUT/run32-build-r1o.log &
  $B -DROPE=0 -o /tmp/r0 $S 2> $OUT/run32-build-r0.log & wait; }
for b in r1n r1o r0; do [ -x /tmp/$b ] || { echo "build $b failed"; cat $OUT/run32-build-$b.log; exit 1; }; done
run() {  # binary shape stages cluster
  echo "\"bin\": \"$1\"" >> $OUT/run32.jsonl
  timeout 12 /tmp/$1 $2 100 0 $3 32 0 1 0 1 $4 1024 0 0 2 0 0 >> $OUT/run32.jsonl 2>> $OUT/run32-phases.log || echo "FAILED $1 $2 rc=$?" >> $OUT/run32.jsonl
}
probes() { for b in r1n r1o r0; do run $b llama-3.2-1b 5 2; run $b qwen3-1.7b 4 2; run $b smollm2-135m 5 1; done; }
probes
timeout 420 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 \
  --variants ";relaxed=1;relaxed=2;relaxed=4;relaxed=4096;relaxed=16;relaxed=32;relaxed=192;" > $OUT/run32-tune.log 2>&1; echo "tune rc=$?"
mv $OUT/tune.json $OUT/run32-tune.json 2>/dev/null
probes
python3 - $OUT/run32.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    if l.startswith('"bin"'): b = l.split('"')[3]; continue
    if not l.startswith("{"): print(l.strip()); continue
    r = json.loads(l)
    print(r["shape"], b, "rope", r["rope"], "qkn", r["qkn"], r["us_per_step"], "us", r["frac_roofline"], r["tokens_equal"], r["resid_rel_err_step1"])
PY
grep -h "step_us" $OUT/run32-tune.log | cut -c1-100
