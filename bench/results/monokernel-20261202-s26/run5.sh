# Session 26, call 5: the same probe with the poll's instruction varied (kind 0 ld.acquire.gpu as
# the monokernel polls, 1 atom.acquire.gpu.add 0, 2 atom.relaxed.gpu.add 0, 3 ld.relaxed.gpu,
# 4 ld.volatile): does any of them come back ahead of the cp.async bytes requested before it?
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/poll_behind bench/probes/poll_behind/poll_behind.cu && \
  timeout 240 stdbuf -oL /tmp/poll_behind 200 > $OUT/poll_behind.json; echo rc=$?; cat $OUT/poll_behind.json
