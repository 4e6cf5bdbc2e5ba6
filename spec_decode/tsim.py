"""What drafting can gain at given T-step costs, from the model's own greedy outputs.

    python -m agentfast.spec_decode.tsim [--costs small|large|"1:568.5,2:705.8,..."] \\
        [-n 128] [--trace NAME] [--json FILE]

For every assistant turn of the trace set: the turn's greedy output (the engine's backend, CPU
reference by default), then at each position p the drafter's proposal of up to 15 tokens after
the prompt and output[:p] (its view included, as in decoding) and its match length L(p), the
drafts a greedy verification would keep there. A decode of the turn is then priced in steps:
plain decode one T = 1 step per token (the first token comes from the prefill, in every
policy); drafting at T positions emits 1 + min(L(p), T - 1) tokens per step of cost(T). The
policies, per trace kind, as speedups over plain decode:

- T=t: every step at T = t (a kernel of t positions running the whole turn, never pausing);
- T=t/plain: a T = 1 step where the drafter proposes nothing, else T = t (the monokernel's
  switching kernel, MonokernelBackend.switch_t, whose one-position steps cost about a T = 1
  step);
- switch T=t: the monokernel's switching kernel as it runs (switch_cost: T = t where the lookup
  proposes and drafting pays by its running mean, one-position steps elsewhere, probes);
- oracle: the cheapest T (1..16) at every step, knowing L: the bound for any policy;
- with `--mtp [PATH]` (the MTP module's greedy drafts at every position, mtp_hits), "by match
  + MTP k=K": the switching kernel's rule where the n-gram lookup drafts, and a step of K + 1
  positions verifying K MTP drafts (each costing --mtp-cost plain steps) where it does not:
  what drafting with the module inside the kernel, as the lookup's fallback, would give;
- with `--tree`, "T=t chain" / "T=t tree": every step at T = t positions (one position where the
  lookup has nothing) verifying the lookup's chain, or a tree of t - 1 nodes merged from the
  continuations of every earlier occurrence of its match (ngram_tree): whether a tree pays.

The costs are a table {T: cost} (relative, or us per step) interpolated linearly
(policy.StepCost); "small" and "large" are the monokernel's H200 tables (SmolLM2-135M, and
models of a GB or more). Host time, launches and the drafter's own cost are not in it. Uses: how
far a drafting policy is from the bound, and what step costs a bar needs (at today's costs, see
bench/results/spec-decode-gpu-20261130-s11).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .policy import StepCost

if TYPE_CHECKING:
    from agentfast.engine import Engine

    from .drafters import Drafter

K_MAX = 15  # drafts a step can verify (T = 16, the kernel's limit)


def _kept(props: list[int], output: list[int], p: int) -> int:
    """How many of the first proposals equal output[p:] (a greedy verification's kept
    drafts)."""
    m = 0
    while m < len(props) and p + m < len(output) and props[m] == output[p + m]:
        m += 1
    return m


def match_lengths(drafter: Drafter, prompt: list[int], output: list[int],
                  k: int = K_MAX) -> tuple[list[int], list[int], list[int]]:
    """Per position p of `output`: (L, P, S) with P[p] the length of the drafter's proposal
    after prompt + output[:p], L[p] how many of its first tokens equal output[p:] and S[p] the
    length of the match behind the proposal (an NgramDrafter's: the n-gram, extended back as
    the device drafter's confidence, weights.D_CONF; 0 without a proposal or for another
    drafter)."""
    from agentfast.kernels.monokernel.sampling import match_span, ngram_match

    from .drafters import NgramDrafter

    drafter.begin(prompt)
    L, P, S = [], [], []
    for p in range(len(output)):
        props = drafter.propose(prompt + output[:p], k)
        m = _kept(props, output, p)
        span = 0
        if props and isinstance(drafter, NgramDrafter):
            seq = drafter.corpus(prompt + output[:p])
            span = match_span(seq, *ngram_match(seq, drafter.min_ngram, drafter.max_ngram))
        L.append(m)
        P.append(len(props))
        S.append(span)
    return L, P, S


TREE_T = (4, 8, 16)  # step widths the tree drafts are priced at (budget T - 1 nodes)


def ngram_occurrences(seq: list[int], min_ngram: int, max_ngram: int) -> list[tuple[int, int]]:
    """Every earlier occurrence of a suffix of `seq` with a token after it, as (n, e): n the
    occurrence's match with the end of seq (min_ngram..max_ngram tokens), e its last
    position; longest first, then latest (the first is NgramDrafter's, sampling.ngram_match)."""
    import numpy as np

    a = np.asarray(seq)
    size = len(a)
    if size <= min_ngram:
        return []
    e = np.nonzero(a[:size - 1] == a[-1])[0]
    n = np.ones(len(e), dtype=np.int64)
    alive = np.ones(len(e), dtype=bool)
    for j in range(1, max_ngram):  # extend every candidate back while it agrees
        i = e - j
        ok = alive & (i >= 0)
        ok[ok] = a[i[ok]] == a[size - 1 - j]
        n += ok
        alive = ok
    keep = n >= min_ngram
    e, n = e[keep], n[keep]
    return [(int(n[i]), int(e[i])) for i in np.lexsort((-e, -n))]


def ngram_tree(seq: list[int], budget: int, min_ngram: int = 1,
               max_ngram: int = 8) -> set[tuple[int, ...]]:
    """A draft tree of up to `budget` nodes from the n-gram lookup (nodes as token paths from
    the step's last token): the continuations, `budget` tokens each, after every earlier
    occurrence of the longest suffix the lookup matches, merged into a trie; its nodes that
    the most occurrences pass through (a child never outnumbers its parent, so they form a
    tree; ties to the shallower, then to the latest occurrence's). NgramDrafter's chain is
    the latest occurrence's continuation alone."""
    occ = ngram_occurrences(seq, min_ngram, max_ngram)
    if not occ or budget <= 0:
        return set()
    n0 = occ[0][0]
    count: dict[tuple[int, ...], float] = {}
    for r, e in enumerate(e for n, e in occ if n == n0):
        cont = tuple(seq[e + 1:e + 1 + budget])
        for d in range(1, len(cont) + 1):
            count[cont[:d]] = count.get(cont[:d], 0.0) + 1.0 + 1e-3 / (1 + r)
    return set(sorted(count, key=lambda k: (-count[k], len(k)))[:budget])


def tree_lengths(drafter: Drafter, prompt: list[int], output: list[int],
                 budgets: tuple[int, ...] = tuple(t - 1 for t in TREE_T)) -> dict[int, list[int]]:
    """Per budget b and position p of `output`: the longest path of ngram_tree(b) after
    prompt + output[:p] (the NgramDrafter's corpus: its view, then the history) that equals
    output[p:], what a step verifying the tree (b + 1 positions, each attending to its
    ancestors) would keep."""
    drafter.begin(prompt)
    out: dict[int, list[int]] = {b: [] for b in budgets}
    for p in range(len(output)):
        seq = drafter.corpus(prompt + output[:p])
        for b in budgets:
            tree = ngram_tree(seq, b, drafter.min_ngram, drafter.max_ngram)
            m = 0
            while p + m < len(output) and tuple(output[p:p + m + 1]) in tree:
                m += 1
            out[b].append(m)
    return out


def mtp_hits(drafter, model, prompt: list[int], output: list[int], k: int = 2) -> list[int]:
    """Per position p of `output`: how many of the MTP drafter's first k greedy drafts after
    prompt + output[:p] equal output[p:] (a chain: counted up to the first wrong one). The
    main model (`model`, engine.model.Transformer) runs once over the whole sequence for the
    hidden states the drafts start from."""
    import torch

    cache = model.new_cache(keep_hidden=True)
    with torch.inference_mode():
        model.forward(torch.tensor(prompt + output), 0, cache)
    drafter.bind(cache)
    return [_kept(drafter.propose(prompt + output[:p], k), output, p)
            for p in range(len(output))]


def steps_cost(L: list[int], cost: StepCost, T: int, P: list[int] | None = None) -> float:
    """Cost, in T = 1 steps, of decoding positions 1.. of a turn with L (match lengths) at T
    positions per step; with P (proposal lengths), a T = 1 step where P is 0."""
    n, p, c = len(L), 1, 0.0
    while p < n:
        if T == 1 or (P is not None and P[p] == 0):
            c, p = c + 1.0, p + 1
        else:
            c, p = c + cost(T), p + 1 + min(L[p], T - 1)
    return c


def oracle_cost(L: list[int], cost: StepCost, t_max: int = K_MAX + 1) -> float:
    """The least cost of decoding positions 1.. of a turn, choosing T per step knowing L."""
    n = len(L)
    best = [0.0] * (n + 1)
    for p in range(n - 1, 0, -1):
        best[p] = min(cost(T) + best[min(n, p + 1 + min(L[p], T - 1))]
                      for T in range(1, t_max + 1))
    return best[1] if n > 1 else 0.0


POLICY_T = (2, 4, 8, 9, 16)


def device_cost(turns: list[tuple[list[int], list[int]]], cost: StepCost, T: int,
                launch: float = 0.0, **policy) -> tuple[float, float]:
    """(cost with drafting, cost of plain decode), in T = 1 steps, of decoding the turns in order
    the way the monokernel's device drafter does (engine/backends/monokernel.py
    _speculate_device with DraftPolicy's defaults): launches of the T kernel run steps until
    the running mean of tokens kept past each step's first (weight `ewma` per step, starting
    at the policy's prior) falls below break_even(T); then a launch of plain steps until the
    next probe (8 steps, doubled after each probe that pauses at its first step, 64 at most:
    the wait carries over to the next turn), then a probe launch, whose first step's count
    replaces the mean. Every launch costs `launch` more (the host's launch, sync and stream;
    plain decode pays it once per turn). A step finding no drafts still costs cost(T).
    `policy`: DraftPolicy arguments (ewma, probe_every, max_probe_every, ...)."""
    from .policy import DraftPolicy, expected_tokens

    pol = DraftPolicy(**{"k_max": T - 1, "k": min(4, T - 1), "cost": cost, **policy})
    floor = pol.break_even(T)
    mean = expected_tokens(pol.rate, T - 1) - 1  # the backend's prior (policy.step_accepted)
    c_spec = c_plain = 0.0
    for L, *_ in turns:
        n, p = len(L), 1
        c_plain += max(n - 1, 0) + (launch if n > 1 else 0.0)
        while p < n:
            if pol.next_k() == 0:  # drafting off: the plain stretch until the probe, one launch
                m = min(1 + pol.take_plain(n - p - 1), n - p)
                c_spec += launch + m
                p += m
                continue
            probe, steps, paused = pol.probing, 0, False
            c_spec += launch
            while p < n:
                kept = min(L[p], T - 1, n - p - 1)
                c_spec += cost(T)
                p += 1 + kept
                mean = kept if probe and steps == 0 else mean + pol.ewma * (kept - mean)
                steps += 1
                if p < n and mean < floor:
                    paused = True
                    break
            pol.launch_ended(paused, probe, steps)
    return c_spec, c_plain


def switch_cost(turns: list[tuple[list[int], ...]], cost: StepCost, T: int,
                one: float = 1.0, floor_frac: float = 0.5, wide: int = 0, need: int = 0,
                match_min: int = 0, match_wide: int = 0, mtp_k: int = 0,
                mtp_cost: float = 0.0, **policy) -> float:
    """Cost, in T = 1 steps, of decoding the turns in order the way the monokernel's switching
    kernel does (MonokernelBackend.switch_t, ops_sample.sample_run): one launch per turn (as
    plain decode: launches left out); a step at T positions (cost(T)) where the lookup
    proposes something and the running mean of kept drafts (weight `ewma` per T-step, from the
    policy's prior, carried from turn to turn) is at least floor_frac x break_even(T), or where
    a probe is due (after probe_every one-position steps below it, the wait doubling to
    max_probe_every after a probe that leaves the mean below, reset by one that does not); a
    one-position step (cost `one`, measured 1.01 on the SmolLM2 shape) elsewhere. A turn's
    first step drafts whenever the host's lookup proposes (set_step_inputs). `policy`:
    DraftPolicy arguments.

    `wide` > T (a third step width: Tiling.narrow, the kernel's narrow steps being these T
    ones, MonokernelBackend.switch_narrow): where the lookup proposes
    and the step before was a T- or wide step that kept at least `need` drafts (default T - 1:
    all of a T-step's), the step runs at `wide` positions (cost(wide)) instead of T; the
    floor and the probes are as above, the mean counting the wide steps' kept drafts too.

    `match_min`, `match_wide` (the kernel's D_MATCH_MIN / D_MATCH_WIDE; turns as (L, P, S),
    S the match lengths behind the proposals, match_lengths): a proposal on a match shorter
    than match_min counts as none (a one-position step), and with `wide` a step whose match
    reaches match_wide runs wide whatever the step before kept (need > wide - 1: only so).

    `mtp_k` > 0 (turns as (L, P, S, M), M from mtp_hits): where the lookup does not draft (no
    proposal, a match under match_min, or paused below the floor), a step of mtp_k + 1
    positions verifies the MTP module's mtp_k drafts (cost(mtp_k + 1) + mtp_k x mtp_cost)
    instead of a one-position step, keeping M[p] of them."""
    if (match_min or match_wide) and any(len(t) < 3 for t in turns):
        raise ValueError("match_min / match_wide need the turns' match lengths (L, P, S)")
    if mtp_k and any(len(t) < 4 for t in turns):
        raise ValueError("mtp_k needs the turns' MTP hits (L, P, S, M)")
    from .policy import DraftPolicy, expected_tokens

    pol = DraftPolicy(**{"k_max": T - 1, "k": min(4, T - 1), "cost": cost, **policy})
    floor = floor_frac * pol.break_even(T)
    mean = expected_tokens(pol.rate, T - 1) - 1
    need = need or T - 1
    c = 0.0
    for L, P, *rest in turns:
        S = rest[0] if rest else [0] * len(L)
        M = rest[1] if mtp_k else None
        n, p, wait, every, probe, first = len(L), 1, 0, pol.probe_every, False, True
        last = -1  # drafts the step before kept (-1: it was a one-position step)
        while p < n:
            draft = P[p] > 0 and S[p] >= match_min
            if draft and not first and mean < floor:
                wait += 1
                probe = wait >= every
                wait = 0 if probe else wait
                draft = probe
            elif mean >= floor:
                wait = 0
            first = False
            if not draft:
                if M is not None:  # the module's drafts instead of a one-position step
                    c += cost(mtp_k + 1) + mtp_k * mtp_cost
                    p += 1 + min(M[p], mtp_k, n - p - 1)
                else:
                    c, p = c + one, p + 1
                last = -1
                continue
            long = 0 < match_wide <= S[p]
            w = wide if wide > T and (last >= need or long) else T
            kept = min(L[p], w - 1, n - p - 1)
            c, p, last = c + cost(w), p + 1 + kept, kept
            mean = kept if probe else mean + pol.ewma * (kept - mean)
            if probe:
                every = (min(2 * every, pol.max_probe_every) if mean < floor
                         else pol.probe_every)
            probe = False
    return c


def simulate(turns: list[tuple[list[int], ...]], cost: StepCost,
             launch: float | None = None, one: float = 1.0,
             mtp_cost: float = 0.09) -> dict[str, float]:
    """Speedups over plain decode of the turns [(L, P[, S]), ...] under each policy; with `launch`
    (a launch's cost in T = 1 steps), also the device drafter's ("device T=t": device_cost);
    "switch T=t": the switching kernel's (switch_cost, one-position steps costing `one`)."""
    plain = sum(max(len(L) - 1, 0) for L, *_ in turns)
    out: dict[str, float] = {}
    if launch is not None:
        for T in (4, 9, 16):
            c, cp = device_cost(turns, cost, T, launch)
            out[f"device T={T}"] = round(cp / c, 3) if c else 1.0
    for T in (4, 8, 16):
        c = switch_cost(turns, cost, T, one)
        out[f"switch T={T}"] = round(plain / c, 3) if c else 1.0
    c = switch_cost(turns, cost, 2, one, wide=16)
    out["switch 2/16"] = round(plain / c, 3) if c else 1.0
    if all(len(t) > 2 for t in turns):  # the monokernel backend's default: widths by match
        from agentfast.engine.backends.monokernel import MonokernelBackend as MB

        rule = dict(wide=MB.switch_t, need=MB.switch_need or MB.switch_t,
                    match_min=MB.switch_match_min, match_wide=MB.switch_match_wide)
        c = switch_cost(turns, cost, MB.switch_narrow, one, **rule)
        out[f"switch {MB.switch_narrow}/{MB.switch_t} by match"] = round(plain / c, 3) if c else 1.0
        if all(len(t) > 3 for t in turns):  # the MTP module as the lookup's fallback
            for k in (1, 2):
                c = switch_cost(turns, cost, MB.switch_narrow, one, mtp_k=k, mtp_cost=mtp_cost,
                                **rule)
                out[f"by match + MTP k={k}"] = round(plain / c, 3) if c else 1.0
    for T in POLICY_T:
        for tag, use_p in ((f"T={T}", False), (f"T={T}/plain", True)):
            c = sum(steps_cost(L, cost, T, P if use_p else None) for L, P, *_ in turns)
            out[tag] = round(plain / c, 3) if c else 1.0
    c = sum(oracle_cost(L, cost) for L, *_ in turns)
    out["oracle"] = round(plain / c, 3) if c else 1.0
    return out


def parse_costs(text: str) -> dict[int, float]:
    from agentfast.engine.backends.monokernel import H200_STEP_COSTS, H200_STEP_COSTS_SMALL

    named = {"small": H200_STEP_COSTS_SMALL, "large": H200_STEP_COSTS}
    if text in named:
        return dict(named[text])
    try:
        table = {int(t): float(c) for t, c in (kv.split(":") for kv in text.split(","))}
    except ValueError:
        raise SystemExit(f"--costs {text!r}: small, large, or T:cost pairs like "
                         "1:568.5,4:834.5") from None
    StepCost(table)  # refuses a table without a positive T = 1 cost
    return table


def collect(engine: Engine, traces: list[dict], max_tokens: int, mtp=None,
            mtp_k: int = 2, tree: bool = False) -> dict[str, dict]:
    """Per trace: its kind and, per assistant turn, (L, P, S) along the engine's greedy output
    (match_lengths), and M (mtp_hits, up to mtp_k) with an MTP drafter `mtp`; with `tree`,
    "trees": per turn the n-gram tree's kept lengths by budget (tree_lengths)."""
    from agentfast.engine import SamplingParams

    from .replay import _assistant_turns, trace_kind

    assert engine.drafter is not None, "collect needs an engine made with drafter="
    out = {}
    for tr in traces:
        turns, trees = [], []
        for i in _assistant_turns(tr):
            prompt = engine.encode_chat(tr["messages"][:i])
            r = engine.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0))
            out_ids = list(r.token_ids)
            t = match_lengths(engine.drafter, prompt, out_ids)
            if mtp is not None:
                t = (*t, mtp_hits(mtp, engine.backend.model, prompt, out_ids, mtp_k))
            turns.append(t)
            if tree:
                trees.append(tree_lengths(engine.drafter, prompt, out_ids))
        out[tr["name"]] = {"kind": trace_kind(tr), "turns": turns,
                           **({"trees": trees} if tree else {})}
    return out


def tree_speedups(turns: list[tuple[list[int], ...]], trees: list[dict[int, list[int]]],
                  cost: StepCost) -> dict[str, float]:
    """Speedups over plain decode of every step at T positions verifying the lookup's chain
    of T - 1 drafts ("T=t chain", tsim's "T=t/plain") or its tree of T - 1 nodes ("T=t tree"),
    a one-position step where the lookup has nothing, at the same step costs (a tree step
    costs what a chain step of as many positions does)."""
    plain = sum(max(len(L) - 1, 0) for L, *_ in turns)
    out: dict[str, float] = {}
    for T in TREE_T:
        c_chain = sum(steps_cost(L, cost, T, P) for L, P, *_ in turns)
        c_tree = sum(steps_cost(tr[T - 1], cost, T, P) for (_, P, *_), tr in zip(
            turns, trees, strict=True))
        out[f"T={T} chain"] = round(plain / c_chain, 3) if c_chain else 1.0
        out[f"T={T} tree"] = round(plain / c_tree, 3) if c_tree else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from agentfast.engine import Engine
    from agentfast.engine.errors import AgentfastError

    from .replay import load_traces

    ap = argparse.ArgumentParser(prog="python -m agentfast.spec_decode.tsim",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="default: the embedded model")
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--costs", action="append",
                    help="small / large (the monokernel's H200 tables) or T:cost pairs; "
                         "repeatable, each priced on the same outputs (default: small)")
    ap.add_argument("--trace", action="append", help="trace name or prefix (default: all)")
    ap.add_argument("--launch", type=float, default=1.2,
                    help="a launch's cost in T = 1 steps, for the device drafter's policy "
                         "(H200, embedded model: ~0.66 ms against 0.56 per step)")
    ap.add_argument("--one", type=float, default=1.0,
                    help="a one-position step of the switching kernel, in T = 1 steps (H200, "
                         "SmolLM2 shape, T = 4 kernel: 1.01)")
    ap.add_argument("--mtp", nargs="?", const="", default=None, metavar="PATH",
                    help="also price the MTP module (the shipped one, or PATH) as the lookup's "
                         "fallback: its drafts at every position (reference backend)")
    ap.add_argument("--mtp-cost", type=float, default=0.09,
                    help="an MTP draft in the kernel, in T = 1 steps (one decoder layer, "
                         "eh_proj and the LM head: ~0.09 on the SmolLM2 shape)")
    ap.add_argument("--tree", action="store_true",
                    help="also price a draft tree of the lookup's continuations (T - 1 nodes: "
                         "ngram_tree) against its chain, at T = 4, 8, 16")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.mtp_cost < 0:
        ap.error(f"--mtp-cost {args.mtp_cost}: a draft's cost is not negative")
    tables = [parse_costs(c) for c in args.costs or ["small"]]
    traces = [t for t in load_traces()
              if not args.trace or any(t["name"].startswith(p) for p in args.trace)]
    eng = Engine.load(args.model, device=args.device, backend=args.backend,
                      drafter=args.drafter)
    mtp = None
    if args.mtp is not None:
        from .mtp import make_drafter

        try:
            mtp = make_drafter("mtp:" + args.mtp if args.mtp else "mtp", eng.model, eng.backend)
        except AgentfastError as e:
            ap.error(f"--mtp: {e}")
    if args.tree and args.drafter != "ngram":
        ap.error("--tree prices the n-gram lookup's tree: --drafter ngram")
    data = collect(eng, traces, args.max_tokens, mtp, tree=args.tree)
    kinds: dict[str, list] = {}
    trees: dict[str, list] = {}
    for d in data.values():
        kinds.setdefault(d["kind"], []).extend(d["turns"])
        trees.setdefault(d["kind"], []).extend(d.get("trees", []))
    kinds["all"] = [t for d in data.values() for t in d["turns"]]
    trees["all"] = [t for d in data.values() for t in d.get("trees", [])]
    records = []
    for table in tables:
        cost = StepCost(table)
        print(f"costs relative to T = 1: "
              f"{ {T: round(cost(T), 3) for T in sorted({*table, *POLICY_T})} }")
        for kind, turns in kinds.items():
            sp = simulate(turns, cost, args.launch, args.one, args.mtp_cost)
            if args.tree:
                sp.update(tree_speedups(turns, trees[kind], cost))
            tokens = sum(len(L) for L, *_ in turns)
            print(f"  {kind}: {tokens} tokens, "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()))
            records.append({"kind": kind, "drafter": args.drafter,
                            "model": str(eng.model.source), "max_tokens": args.max_tokens,
                            "costs": table, "tokens": tokens, "speedup": sp})
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "traces": data}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
