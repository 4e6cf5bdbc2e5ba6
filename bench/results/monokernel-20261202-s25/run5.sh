# Session 25, call 5: bench/probes/cluster_sync, all modes, with the vectorized DSMEM exchanges (5: pushed
# float4 stores, 6: pulled float4 loads).
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/cluster_sync bench/probes/cluster_sync/cluster_sync.cu && \
  for h in 576 1536 2048; do timeout 60 /tmp/cluster_sync $h 20000 > $OUT/cluster_sync_$h.json; echo rc=$?; done
python3 - <<'PY'
import json, os
for h in (576, 1536, 2048):
    d = json.load(open(f"{os.environ['OUT']}/cluster_sync_{h}.json"))
    for r in d["rows"]:
        print(h, r["cta"], r["clusters"], r["mode"], r["ns_per_iter"])
PY
