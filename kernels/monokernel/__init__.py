"""The decode monokernel: one persistent Triton kernel that runs the whole decode loop.

Data flow: `plan.py` turns a model config into per-program instruction lists (dataclasses that
serialize to int32 records, with dependency counters); `weights.py` stacks the model's weights
per kind and lays out one sequence's buffers; `vm.py` executes a plan with torch ops (the
oracle for every buffer) and `sampling.py` holds the sampling rules in torch; `kernel.py` is
the persistent kernel (device code in `sync.py`, `ops_mv.py`, `ops_attn.py`, `ops_sample.py`)
and its launcher; `diff.py` finds the first buffer where two runs part; `harness.py` sets a
model up for all of them; `gpu_check.py` is the check to run on the GPU. Knows nothing about
tokenizers, sessions or the HTTP server (engine/backends/monokernel.py is the backend).
"""
