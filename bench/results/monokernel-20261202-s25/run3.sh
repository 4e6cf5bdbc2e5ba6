# Session 25, call 3: two probes for the SmolLM2-135M bar (a step on a few SMs instead of 264
# programs synced through L2): read bandwidth of N persistent programs (bench/probes/sm_bw) and
# the cost of a dependent exchange inside one thread-block cluster (bench/probes/cluster_sync).
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/cluster_sync bench/probes/cluster_sync/cluster_sync.cu && \
  for h in 576 1536; do timeout 60 /tmp/cluster_sync $h 20000 > $OUT/cluster_sync_$h.json; echo rc=$?; cat $OUT/cluster_sync_$h.json; done
timeout 300 python bench/probes/sm_bw/sm_bw.py > $OUT/sm_bw.json 2> $OUT/sm_bw.log; echo rc=$?
python3 -c "
import json; d = json.load(open('$OUT/sm_bw.json'))
for n, r in d['best_per_count'].items(): print(n, r)"
