# Session 26, call 6: the wait's poll as ld.relaxed.gpu (AGENTFAST_MK_POLL=1) and as ld.relaxed.gpu
# + fence.acq_rel.gpu once it passes (=2) instead of ld.acquire.gpu (=0): run 5 showed the
# acquire load answering only after the cp.async bytes requested before it, the relaxed load not.
# tune A / 1 / 2 / A (separate processes: the poll is a module constant), ctx 1024, T = 1; then
# the kernel's GPU tests with 2 and with 1.
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
nvidia-smi -L
for k in 0 1 2 0; do
  AGENTFAST_MK_POLL=$k timeout 200 python -m agentfast.kernels.monokernel.tune --shapes llama-3.2-1b,qwen3-1.7b,smollm2-135m --steps 150 > $OUT/tune_poll$k.log 2>&1; echo poll=$k rc=$?
  grep -E "copy|^\{" $OUT/tune_poll$k.log | python3 -c "
import json, sys
for l in sys.stdin:
    if l.startswith('{'):
        r = json.loads(l); print('  ', r.get('step_us'), r.get('roofline_frac'), (r.get('fit') or {}).get('registers'))
    else: print('  ', l.strip())"
  mv $OUT/tune.json $OUT/tune_poll${k}_$RANDOM.json  # (renamed here: _first, _last by their figures)
done
for k in 2 1; do
  AGENTFAST_MK_POLL=$k TRITON_INTERPRET=0 timeout 150 python -m pytest -q -x -m gpu tests/monokernel/test_mk_kernel.py -p no:cacheprovider 2>&1 | tail -2; echo tests poll=$k
done
ls $OUT
