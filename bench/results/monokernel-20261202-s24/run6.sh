# Session 24, call 6: the program count. A traced step (run 4) showed each matvec program's time
# proportional to its own rows (Llama gate/up: 30-row programs 0.50 us under the median, 32-row ones
# 0.53 over), the op ending with the programs that hold ceil(rows / 264): 32 of a mean 31.03 (gate/up),
# 8 of 7.76 (down), 12 of 11.64 (QKV), 64 of 62.06 (O-proj merge). 256 programs hold the same maxima
# with fewer programs waiting and releasing. Same call, A/B/../A.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("variant"), r.get("step_us"), r.get("roofline_frac"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 300 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 --variants ";programs=256;programs=240;programs=256;" > $OUT/tune.log 2>&1; echo rc=$?; show $OUT/tune.log
