# Session 23, call 5: the GPU tests with narrow_merge on by default (engine, kernels, monokernel,
# speculative decoding; the tests that need the embedded model skip here)
mkdir -p .whl && cp .whl_core/*.whl .whl/; source bench/device_setup.sh >/dev/null 2>&1
TRITON_INTERPRET=0 timeout 420 python -m pytest -q -m gpu tests/monokernel tests/kernels tests/spec_decode tests/test_graph_backend.py tests/test_constraints.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo tests rc=$?; tail -4 $OUT/gpu_tests.log | cut -c1-300
