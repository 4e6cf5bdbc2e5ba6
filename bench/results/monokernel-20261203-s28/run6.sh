# Session 28, call 6: the launch shape for the smallest model, again (session 5 found one
# program of 8 warps per SM faster on SmolLM2-135M; the kernel has changed since): 2 x 4 warps
# per SM (default) against 1 x 4 and 1 x 8, ctx 1024, T = 1; Llama-3.2-1B beside it.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
timeout 400 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,llama-3.2-1b --steps 150 --variants ";per_sm=1;per_sm=1,warps=8;" > $OUT/tune.log 2>&1; echo rc=$?
python3 - $OUT/tune.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r["variant"], r["step_us"], r.get("tok_s"), r["roofline_frac"], f.get("registers"), f.get("spills"), f.get("programs_per_sm"), r.get("error"))
    elif line.strip():
        print(line.rstrip()[:200])
PY
