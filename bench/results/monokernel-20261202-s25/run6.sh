# Session 25, call 6: bench/probes/cluster_sync, every mode alone and beside a kernel that keeps
# HBM busy (loaded: 1), as the monokernel's exchanges happen while weights stream.
# (Both runs hit their 120 s timeout with nothing printed: the hog then was two 512-thread CTAs
# per SM running 4M rounds, so a cluster that could not start beside it waited for all of them,
# and stdout was buffered. Call 7 runs the fixed probe.)
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/cluster_sync bench/probes/cluster_sync/cluster_sync.cu && \
  for h in 576 1536; do timeout 120 /tmp/cluster_sync $h 20000 > $OUT/cluster_sync_$h.json; echo rc=$?; done
