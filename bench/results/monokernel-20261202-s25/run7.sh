# Session 25, call 7: bench/probes/cluster_sync, every mode alone and beside a kernel that keeps
# HBM busy (loaded: 1), as the monokernel's exchanges happen while weights stream.
nvidia-smi -L
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/cluster_sync bench/probes/cluster_sync/cluster_sync.cu && \
  for h in 576 1536; do timeout 60 /tmp/cluster_sync $h 5000 > $OUT/cluster_sync_$h.json; echo rc=$?; done
python3 - <<'PY'
import json, os
for h in (576, 1536):
    txt = open(f"{os.environ['OUT']}/cluster_sync_{h}.json").read()
    d = json.loads(txt if txt.endswith("]}\n") else txt.rstrip(", \n") + "]}")
    t, ov = {}, {}
    for r in d["rows"]:
        t[(r["cta"], r["clusters"] > 1, r["mode"], r["loaded"])] = r["ns_per_iter"]
        if r["loaded"]:
            ov[(r["cta"], r["clusters"] > 1, r["mode"])] = r["overlapped"]
    for (n, many, m, ld), v in sorted(t.items()):
        if ld == 0:
            print(h, "N", n, "many" if many else "one", "mode", m, "idle", v, "loaded", t.get((n, many, m, 1)), "overlap", ov.get((n, many, m)))
PY
