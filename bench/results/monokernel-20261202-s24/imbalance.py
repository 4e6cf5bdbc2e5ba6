"""Run 4's traced Llama-3.2-1B step (default variant): per matvec op, each program's busy time
(release - wake-up) against the layer's median, grouped by the program's rows; and how much
earlier ATTN / O-proj could start if each waited only for its own kv head's producer tiles.
Usage: python imbalance.py run4-timeline-llama-3.2-1b-0.npz (numpy and agentfast installed)."""
import sys

import numpy as np

from agentfast.kernels.monokernel import plan as P

z = np.load(sys.argv[1])
tr, table, offs = z["trace"], z["table"], z["offs"]
NP, NL = len(offs) - 1, 16
NH, NKV, HD = 32, 8, 64  # Llama-3.2-1B
G, Q, KV = NH // NKV, NH * HD, NKV * HD
by: dict = {}
for p in range(NP):
    for j, i in enumerate(range(offs[p], offs[p + 1])):
        op, _seq, layer, a, b = table[i][:5]
        by.setdefault((int(op), int(layer)), []).append((p, int(a), int(b), tr[p, j]))
for op in (P.QKV, P.OPROJ_M, P.GATEUP, P.DOWN):
    busy = np.zeros((NL, NP))
    rows = np.zeros(NP)
    for layer in range(NL):
        for p, a, b, st in by[(op, layer)]:
            busy[layer, p] += (st[-1] - st[1]) / 1e3
            rows[p] = b - a if layer == 0 else rows[p]
    excess = (busy - np.median(busy, 1, keepdims=True)).mean(0)
    print(P.OP_NAMES[op], {int(r): (int((rows == r).sum()), round(float(excess[rows == r].mean()), 3))
                           for r in sorted(set(rows))}, "(rows: programs, mean excess us)")


def kv_heads_of_qkv_rows(a, b):
    return {r // (G * HD) if r < Q else (r - Q) // HD if r < Q + KV else (r - Q - KV) // HD
            for r in range(a, b)}


def earlier(op, heads_of):
    out = []
    for layer in range(NL):
        recs = by[(op, layer)]
        last = max(st[-1] for *_, st in recs)
        per = [0] * NKV
        for _p, a, b, st in recs:
            for h in heads_of(a, b):
                per[h] = max(per[h], st[-1])
        out.append([(last - t) / 1e3 for t in per])
    return float(np.mean(out))


S = max(b for _p, _a, b, _st in by[(P.ATTN, 0)]) // NKV
print("ATTN on its kv head's QKV tiles: earlier by %.3f us a layer" % earlier(P.QKV, kv_heads_of_qkv_rows))
print("O-proj on its kv head's splits: earlier by %.3f us a layer"
      % earlier(P.ATTN, lambda a, b: {t // S for t in range(a, b)}))
