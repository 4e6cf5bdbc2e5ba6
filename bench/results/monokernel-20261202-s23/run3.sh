# Session 23, call 3: after run 2's timeline, O-proj's merge of the narrow steps over 2 positions as
# two [BN, BK] products (not one [BN, 2, BK]), and the FMA T-path's O-proj / down loading their
# run's residual (and part) once after the wait instead of per tile (ops_mv.mv_tiles_t). Same call:
# the new code (narrow steps without / with narrow_merge, one-position and wide steps with it, a
# T = 4 kernel's T-step), then ops_mv.py as before this session (run3-ops_mv_before.py: the
# residual per tile) for the narrow step without narrow_merge and the T = 4 step; GPU tests.
# (run3-ops_mv_before.py was `git show 734d829:kernels/monokernel/ops_mv.py`, byte for byte; not kept
# in the results since that commit holds it.)
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
S=smollm2-135m,qwen3-1.7b
show() { python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line); f = r.get("fit") or {}
        print(r.get("shape"), r.get("variant"), r.get("step_us"), f.get("registers"), f.get("spills"), r.get("error"))
    elif line.strip() and not line.startswith(" "):
        print(line.rstrip()[:200])
PY
}
timeout 250 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 100 --variants "T=16,narrow=2,one=2;T=16,narrow=2,one=2,narrow_merge=1;T=16,narrow=2,one=1,narrow_merge=1;T=16,narrow=2,narrow_merge=1;T=4" > $OUT/tune_new.log 2>&1; echo new rc=$?; show $OUT/tune_new.log
cp kernels/monokernel/ops_mv.py /tmp/ops_mv_new.py
cp bench/results/monokernel-20261202-s23/run3-ops_mv_before.py kernels/monokernel/ops_mv.py
timeout 120 python -m agentfast.kernels.monokernel.tune --shapes $S --steps 100 --variants "T=16,narrow=2,one=2;T=4" > $OUT/tune_before.log 2>&1; echo before rc=$?; show $OUT/tune_before.log
cp /tmp/ops_mv_new.py kernels/monokernel/ops_mv.py
TRITON_INTERPRET=0 timeout 150 python -m pytest -q -m gpu tests/monokernel/test_mk_draft.py -k "three_widths and nm or switches_per_step" -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -3 $OUT/gpu_tests.log | cut -c1-300
