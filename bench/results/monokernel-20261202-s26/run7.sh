# Session 26, call 7: the probe with mode 4 (cp.async by warps 1-3 only, thread 0 polls): does the
# acquire wait for the CTA's copies or only for those of its own warp? (kinds 0 and 3)
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/poll_behind bench/probes/poll_behind/poll_behind.cu && \
  timeout 240 stdbuf -oL /tmp/poll_behind 200 > $OUT/poll_behind.json; echo rc=$?; cat $OUT/poll_behind.json
