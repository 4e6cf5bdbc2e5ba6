# Session 28, call 4: bench/probes/stream_tail: does the slowest program of a matvec op depend on
# which tiles each program streams (contiguous runs, as the monokernel, or interleaved)?
nvidia-smi -L
timeout 200 python bench/probes/stream_tail/stream_tail.py 40
