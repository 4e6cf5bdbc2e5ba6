# Session 26, call 1: does a flag poll wait behind the bytes its SM requested before it, and
# does a TMA bulk copy (cp.async.bulk) avoid that? bench/probes/poll_behind (README there).
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/poll_behind bench/probes/poll_behind/poll_behind.cu && \
  timeout 240 stdbuf -oL /tmp/poll_behind 200 > $OUT/poll_behind.json; echo rc=$?; cat $OUT/poll_behind.json
