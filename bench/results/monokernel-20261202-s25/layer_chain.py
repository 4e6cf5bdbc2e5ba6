"""Per-layer op chain of a traced step (tune --timeline npz): per op kind, medians over the
layers of its last wake, median and last release (each relative to the previous op's last
release) and its median busy time (wake to release), us; then the record dispatch (a
program's release of one record to the start of its next). Usage: python layer_chain.py
timeline.npz NUM_LAYERS (numpy and agentfast installed)."""
import sys

import numpy as np

from agentfast.kernels.monokernel import plan as P

z = np.load(sys.argv[1])
NL = int(sys.argv[2])
tr, table, offs = z["trace"].astype(np.float64), z["table"], z["offs"]
by: dict = {}
for p in range(len(offs) - 1):
    for j, i in enumerate(range(offs[p], offs[p + 1])):
        op, _seq, layer = (int(v) for v in table[i][:3])
        by.setdefault((op, layer), []).append(tr[p, j])
ops = [o for o in (P.QKV, P.ATTN, P.OPROJ_M, P.GATEUP, P.DOWN) if (o, 0) in by]
rows = []
for layer in range(NL):
    r = []
    for o in ops:
        v = np.array(by[(o, layer)])
        r.append((v[:, 1].max(), np.median(v[:, -1]), v[:, -1].max(),
                  np.median(v[:, -1] - v[:, 1])))
    rows.append(r)
rows = np.array(rows) / 1e3  # [layer, op, (last wake, median release, last release, busy)]
for k, o in enumerate(ops):
    prev = rows[:, k - 1, 2] if k > 0 else np.r_[np.nan, rows[:-1, -1, 2]]
    last_wake, med_rel, last_rel = (np.nanmedian(rows[:, k, c] - prev) for c in range(3))
    print(f"{P.OP_NAMES[o]:8s} last wake {last_wake:6.2f} median release {med_rel:6.2f} "
          f"last release {last_rel:6.2f} busy median {np.median(rows[:, k, 3]):6.2f}")
print("layer period (median)", float(np.median(np.diff(rows[:, -1, 2]))))
# the record dispatch: a program's release of one record to the start of its next
gap: dict = {}
for p in range(len(offs) - 1):
    for j in range(offs[p + 1] - offs[p] - 1):
        if tr[p, j, -1] > 0 and tr[p, j + 1, 0] > 0:
            name = P.OP_NAMES[int(table[offs[p] + j + 1][0])]
            gap.setdefault(name, []).append((tr[p, j + 1, 0] - tr[p, j, -1]) / 1e3)
for name, g in gap.items():
    print(f"dispatch before {name:8s} median {np.median(g):.3f} p90 {np.percentile(g, 90):.3f} us")
