# Session 22, call 2 (after a first try that collected tests/ whole: the server's and the agent's
# tests need packages this machine lacks): the GPU tests of the engine, kernels, monokernel and
# speculative decoding with kind_tables on by default at T > 1
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 450 python -m pytest -q -m gpu tests/monokernel tests/kernels tests/test_graph_backend.py tests/spec_decode tests/test_constraints.py -p no:cacheprovider -rs > $OUT/gpu_tests.log 2>&1; echo tests rc=$?
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tests.log | cut -c1-250 | tail -15
