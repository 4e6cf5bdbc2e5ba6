# Session 26, call 8: modes 4 and 5 (cp.async by warps 1-3, or by 0-2), one SM and all: is it the
# polling warp's own copies that hold up the acquire, and why mode 4's data came so fast
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/poll_behind bench/probes/poll_behind/poll_behind.cu && \
  timeout 240 stdbuf -oL /tmp/poll_behind 200 > $OUT/poll_behind.json; echo rc=$?; cat $OUT/poll_behind.json
