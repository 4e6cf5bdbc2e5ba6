"""Session 22 (CPU VM): the n-gram drafter's rule (widths by the lookup's match) priced at run 1's
step costs with kind tables (one position 543.7, narrow 712.0, wide 1,309.9 us; the T = 1
kernel's plain step 537.7, session 21 run 1), and with the narrow step at hypothetical costs
(what O-proj merging the narrow steps' attention splits, as it does the one-position steps',
could bring: session 21's breakdown puts the narrow step's attention at 165 us against 67 in a
one-position step). Greedy outputs of the CPU reference backend, as tsim collects them, cached
in /tmp/tsim_data.pkl (session 21's policy_oracle.py uses the same cache).

    python bench/results/monokernel-20261201-s22/price_narrow.py
"""

import pickle
from pathlib import Path

from agentfast.engine import Engine
from agentfast.spec_decode import tsim
from agentfast.spec_decode.policy import StepCost
from agentfast.spec_decode.replay import load_traces

PLAIN = 537.7
ONE, WIDE = 543.7, 1309.9


def main() -> None:
    cache = Path("/tmp/tsim_data.pkl")
    if not cache.exists():
        eng = Engine.load(None, device="cpu", backend="reference", drafter="ngram")
        cache.write_bytes(pickle.dumps(tsim.collect(eng, load_traces(), 128)))
    data = pickle.loads(cache.read_bytes())
    kinds: dict[str, list] = {}
    for d in data.values():
        kinds.setdefault(d["kind"], []).extend(d["turns"])
    kinds["all"] = [t for k in list(kinds) for t in kinds[k]]
    print("kind", *(f"narrow {n:.0f}" for n in (712.0, 680.0, 640.0, 600.0)), sep="\t")
    for kind, turns in kinds.items():
        plain = sum(len(L) - 1 for L, *_ in turns)
        row = []
        for narrow in (712.0, 680.0, 640.0, 600.0):
            cost = StepCost({1: PLAIN, 2: narrow, 16: WIDE})
            c = tsim.switch_cost(turns, cost, 2, one=ONE / PLAIN, wide=16, need=15,
                                 match_min=2, match_wide=4)
            row.append(f"{plain / c:.3f}")
        print(kind, *row, sep="\t")


if __name__ == "__main__":
    main()
