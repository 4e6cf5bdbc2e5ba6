# Session 22, call 6: the T-step tl.dot matvecs take each position's rms from the first tile's
# chunks of x (AGENTFAST_T_RMS_LOOP=1) instead of a pass over x before the chunk loop; off / on /
# off / on in one call (a process each: the switch is read at import), T = 16 narrow 2 wide
# steps and T = 8 steps, SmolLM2 and Qwen3-1.7B; then the three-width GPU test with it on
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
for e in 0 1 0 1; do
  AGENTFAST_T_RMS_LOOP=$e timeout 110 python -m agentfast.kernels.monokernel.tune --shapes smollm2-135m,qwen3-1.7b --steps 100 --variants "T=16,narrow=2;T=8" > $OUT/tune_$e.log 2>&1; echo "rms_loop=$e rc=$?"
  grep '^{' $OUT/tune_$e.log | python3 -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l); f = r.get('fit') or {}
    print('  ', r['variant'], r.get('step_us'), f.get('registers'), f.get('spills'), r.get('error'))"
  cat $OUT/tune_$e.log >> $OUT/tune_all.log
done
AGENTFAST_T_RMS_LOOP=1 TRITON_INTERPRET=0 timeout 120 python -m pytest -q -m gpu tests/monokernel/test_mk_draft.py -k "three_widths" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -2 $OUT/gpu_tests.log | cut -c1-200
