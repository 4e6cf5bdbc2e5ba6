"""Session 21 (CPU VM): what the drafting kernel of the embedded model could gain from a better
step-width policy, at the step costs of run 1 (one position 567, narrow 688, wide 1,276 us; plain
decode 537). The T = 4 / 8 costs are not this session's: 830 (session 13's T = 4 kernel, 826) and
1,130 (session 13's T = 8 ratio, 2.11 T = 1 steps, x 537). Greedy outputs of the CPU reference
backend, as tsim collects them, cached in /tmp/tsim_data.pkl.

    python bench/results/monokernel-20261201-s21/policy_oracle.py
"""

import collections
import pickle
from pathlib import Path

from agentfast.engine import Engine
from agentfast.spec_decode import tsim
from agentfast.spec_decode.policy import StepCost
from agentfast.spec_decode.replay import load_traces

PLAIN = 537.0  # us, the T = 1 kernel's step (run 1)
DRAFTING = {1: 567.0, 2: 688.0, 16: 1276.0}  # the T = 16 narrow-2 kernel's steps (run 1)


def oracle(L: list[int], costs: dict[int, float]) -> float:
    """Least cost of a turn choosing each step's width among `costs`, knowing the kept drafts."""
    n = len(L)
    best = [0.0] * (n + 1)
    for q in range(n - 1, 0, -1):
        best[q] = min(c + best[min(n, q + 1 + min(L[q], w - 1))] for w, c in costs.items())
    return best[1] if n > 1 else 0.0


def main() -> None:
    cache = Path("/tmp/tsim_data.pkl")
    if not cache.exists():
        eng = Engine.load(None, device="cpu", backend="reference", drafter="ngram")
        cache.write_bytes(pickle.dumps(tsim.collect(eng, load_traces(), 128)))
    data = pickle.loads(cache.read_bytes())
    kinds: dict[str, list] = {}
    for d in data.values():
        kinds.setdefault(d["kind"], []).extend(d["turns"])
    cost = StepCost({1: PLAIN, 2: DRAFTING[2], 16: DRAFTING[16]})
    for kind in ("edit_file", "repeat_tool_output"):
        turns = kinds[kind]
        plain = sum(len(L) - 1 for L, *_ in turns) * PLAIN
        print(kind, "oracle{1,2,16}",
              round(plain / sum(oracle(L, DRAFTING) for L, *_ in turns), 3))
        for extra in ({4: 830.0}, {8: 1130.0}, {4: 830.0, 8: 1130.0}):
            cc = {**DRAFTING, **extra}
            print("  + ", extra, round(plain / sum(oracle(L, cc) for L, *_ in turns), 3))
        for mm, mw, need in ((2, 4, 15), (2, 3, 15), (2, 5, 15), (3, 4, 15), (1, 4, 15),
                             (2, 4, 8), (2, 6, 15), (2, 8, 15)):
            c = tsim.switch_cost(turns, cost, 2, one=DRAFTING[1] / PLAIN, wide=16, need=need,
                                 match_min=mm, match_wide=mw)
            print(f"  by match min {mm} wide {mw} need {need}: {plain / PLAIN / c:.3f}")
        tab = collections.defaultdict(list)  # the match behind a proposal -> drafts kept
        for L, P, S in turns:
            for q in range(1, len(L)):
                if P[q]:
                    tab[min(S[q], 12)].append(L[q])
        for s in sorted(tab):
            v = tab[s]
            print(f"   S={s:2d} n={len(v):4d} meanL={sum(v) / len(v):5.2f} "
                  f"L>=1 {sum(x >= 1 for x in v) / len(v):.2f} "
                  f"L>=8 {sum(x >= 8 for x in v) / len(v):.2f} "
                  f"L=15 {sum(x >= 15 for x in v) / len(v):.2f}")


if __name__ == "__main__":
    main()
