"""tsim: pricing a turn's decode at T-position steps from the drafter's match lengths."""

from __future__ import annotations

import json

import pytest
import torch

from agentfast.spec_decode import NgramDrafter
from agentfast.spec_decode.policy import StepCost
from agentfast.spec_decode.tsim import (
    main,
    match_lengths,
    ngram_occurrences,
    ngram_tree,
    oracle_cost,
    parse_costs,
    simulate,
    steps_cost,
    switch_cost,
    tree_lengths,
    tree_speedups,
)

COST = StepCost({1: 1.0, 4: 1.5, 16: 2.0})


def test_steps_cost_walks_the_match_lengths():
    L = [0, 3, 0, 0, 0, 0]  # position 0 comes from the prefill
    assert steps_cost(L, COST, 1) == 5  # plain: one step per token
    assert steps_cost(L, COST, 4) == 2 * 1.5  # p = 1 keeps 3 drafts + 1 -> p = 5, then one step
    assert steps_cost(L, COST, 2) == 4 * COST(2)  # 1 + min(3, 1) at p = 1, then 1 each at 3, 4, 5
    P = [0, 5, 0, 0, 0, 0]  # proposals only at p = 1: plain steps elsewhere
    assert steps_cost(L, COST, 4, P) == 1.5 + 1.0


def test_oracle_is_a_lower_bound():
    L = [0, 7, 6, 5, 4, 3, 2, 1, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    best = oracle_cost(L, COST)
    assert all(best <= steps_cost(L, COST, T) + 1e-9 for T in range(1, 17))
    assert best < min(steps_cost(L, COST, T) for T in range(1, 17))  # choosing per step pays
    flat = StepCost({1: 1.0})
    assert oracle_cost(L, flat) == steps_cost(L, flat, 16)  # free steps: always the widest
    sp = simulate([(L, [1] * len(L))], COST)
    assert sp["oracle"] >= max(v for k, v in sp.items() if k != "oracle")


def test_switch_cost_follows_the_kernels_rule():
    """The switching kernel priced: where drafting pays it is the T / plain policy (T-steps
    where the lookup proposes, one-position steps elsewhere); with proposals that never match,
    the mean falls below the floor and the steps run as one position but for the probes, whose
    waits double to max_probe_every; nothing proposed: one-position steps only."""
    n = 200
    good = ([0] + [3] * (n - 1), [0] + [5 if i % 7 else 0 for i in range(1, n)])
    assert switch_cost([good], COST, 4) == pytest.approx(steps_cost(good[0], COST, 4, good[1]))
    wrong = ([0] * n, [0] + [5] * (n - 1))  # always a proposal, never kept
    c = switch_cost([wrong], COST, 4, probe_every=8, max_probe_every=64)
    probes = c - (n - 1)  # what the T-steps cost over one-position steps
    assert 0 < probes < 20 * (COST(4) - 1)  # ~10 steps while the prior decays, then 4 probes
    assert c < steps_cost(wrong[0], COST, 4, wrong[1]) / 1.3  # T / plain pays cost(4) each step
    assert switch_cost([([0] * n, [0] * n)], COST, 4, one=1.01) == pytest.approx(1.01 * (n - 1))


def test_switch_cost_with_a_wide_step_after_a_full_one():
    """switch_cost(wide=W): after a T-step that kept all its drafts the next one runs at W
    positions. On a long copy (every lookup right for 20 tokens) with cost(16) < 4 x cost(4)
    it is cheaper than T = 4 alone; where no step keeps all its drafts it is T = 4's cost;
    a hand-walked turn gives the exact sum."""
    n = 400
    copy = ([0] + [20] * (n - 1), [0] + [15] * (n - 1))
    c4, c16 = switch_cost([copy], COST, 4), switch_cost([copy], COST, 4, wide=16)
    assert c16 < c4 / 2
    partial = ([0] + [2] * (n - 1), [0] + [15] * (n - 1))  # 2 of 3 drafts kept: never wide
    assert switch_cost([partial], COST, 4, wide=16) == pytest.approx(
        switch_cost([partial], COST, 4))
    # positions 1..24: T = 4 keeps 3 (p 1 -> 5), wide keeps 15 (5 -> 21), wide keeps 0 (21 ->
    # 22), T = 4 keeps 1 (22 -> 24), T = 4 for the last position (nothing left to keep)
    turn = ([0] + [3] * 4 + [15] * 16 + [0] + [1] * 3, [0] + [15] * 24)
    assert len(turn[0]) == 25
    want = COST(4) + COST(16) + COST(16) + COST(4) + COST(4)
    assert switch_cost([turn], COST, 4, wide=16) == pytest.approx(want)


def test_match_lengths_follow_a_copy():
    d = NgramDrafter()
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 1, 2]
    out = [5, 6, 7, 8, 9, 10, 11, 12, 3]  # copies the prompt, then leaves it
    L, P, S = match_lengths(d, prompt, out, k=15)
    assert len(L) == len(P) == len(S) == len(out)
    assert all(0 <= m <= n for m, n in zip(L, P, strict=True))
    assert L[2] == 6 and L[-1] == 0  # after "5 6" the lookup proposes "7 .. 12" (then 1 2)
    # the match behind each proposal: nothing after "1 2", then "5", "5 6", ... (the prompt's
    # start: nothing before it to extend back over), the whole "5 .. 12" at the end
    assert S[:5] == [0, 1, 2, 3, 4] and S[-1] == 8
    # extended back past the n-gram (2 tokens at most here): "2 3" seen before, and "9 1"
    # before both (8 != 7 ends it): 4; one token later "3 4", "9 1 2" before both: 5
    d2 = NgramDrafter(max_ngram=2)
    _, _, S2 = match_lengths(d2, [7, 9, 1, 2, 3, 4, 5, 8, 9, 1, 2, 3], [4, 0], k=4)
    assert S2 == [4, 5]


def test_ngram_occurrences_start_with_the_lookups_match():
    from agentfast.kernels.monokernel.sampling import ngram_match

    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        seq = torch.randint(0, 4, (int(torch.randint(1, 40, (1,), generator=g)),),
                            generator=g).tolist()
        occ = ngram_occurrences(seq, 1, 3)
        assert (occ[0] if occ else (0, -1)) == ngram_match(seq, 1, 3)
        for n, e in occ:  # each: n tokens ending at e equal the end, a token after e
            assert 1 <= n <= 3 and e <= len(seq) - 2 and seq[e - n + 1:e + 1] == seq[-n:]
        assert occ == sorted(occ, key=lambda o: (-o[0], -o[1]))


def test_ngram_tree_takes_the_continuations_most_occurrences_share():
    # "1 2" occurs three times before the end: followed by "3 1 2", "4 1 2", "3 1 2"
    seq = [1, 2, 3, 1, 2, 4, 1, 2, 3, 1, 2]
    assert ngram_tree(seq, 3, 1, 2) == {(3,), (3, 1), (3, 1, 2)}
    assert ngram_tree(seq, 4, 1, 2) == {(3,), (3, 1), (3, 1, 2), (4,)}  # the branch next
    assert ngram_tree(seq, 0, 1, 2) == set() and ngram_tree([7, 8], 4, 1, 2) == set()
    # the kept length: the tree's longest path equal to the output; the chain (the latest
    # occurrence's "3 1 2") keeps nothing where the output goes "4 1"
    d = NgramDrafter(max_ngram=2)
    out = [9, 4, 1, 7]  # the lookup runs after prompt + out[:p]
    trees = tree_lengths(d, seq, out, budgets=(1, 4))
    L, P, _ = match_lengths(d, seq, out, k=4)
    assert trees[4][0] == 0 and L[0] == 0  # "9" follows no occurrence of "1 2"
    prompt = seq[:-1] + [2]  # the same history
    trees = tree_lengths(d, prompt, [4, 1, 7], budgets=(1, 4))
    L, P, _ = match_lengths(d, prompt, [4, 1, 7], k=4)
    assert L[0] == 0 and trees[1][0] == 0 and trees[4][0] == 1
    cost = StepCost({1: 1.0, 16: 1.0})  # free steps: the tree can only gain here
    sp = tree_speedups([(L, P)], [{3: trees[4], 7: trees[4], 15: trees[4]}], cost)
    assert sp["T=4 tree"] >= sp["T=4 chain"] > 0


def test_switch_cost_widths_by_match():
    # a turn of 12 positions: a weak match (S = 1) where the lookup proposes 0 good tokens,
    # then a long one (S = 6) with 10 to keep, then nothing
    L = [0, 0, 10] + [0] * 9
    P = [0, 3, 15] + [15] * 9
    S = [0, 1, 6] + [1] * 9
    turn = (L, P, S)
    # p 1: weak -> one position; p 2: S 6 >= match_wide -> wide keeps 10 (-> 13: the end)
    want = 1.0 + COST(16)
    got = switch_cost([turn], COST, 2, wide=16, need=16, match_min=2, match_wide=4)
    assert got == pytest.approx(want)
    # without the match rule: p 1 narrow (keeps 0), p 2 narrow (keeps 1), then p 4.. narrow
    # steps keeping 0 (the mean falls below the floor only after some of them)
    assert switch_cost([turn], COST, 2, wide=16) > want
    with pytest.raises(ValueError, match="match lengths"):
        switch_cost([(L, P)], COST, 2, wide=16, match_min=2)


def test_switch_cost_with_mtp_drafts_where_the_lookup_has_none():
    # no n-gram proposal anywhere; the module's first draft right at p = 1, 2, 4, 5, 6
    n = 8
    L, P, S = [0] * n, [0] * n, [0] * n
    M = [0, 1, 1, 0, 1, 1, 1, 0]
    turn = (L, P, S, M)
    plain_steps = switch_cost([turn], COST, 2, wide=16, match_min=2, match_wide=4)
    assert plain_steps == pytest.approx(n - 1)  # one-position steps without M
    # p 1 keeps 1 (-> 3), p 3 keeps 0 (-> 4), p 4 keeps 1 (-> 6), p 6 keeps 1 (-> 8): 4 steps
    got = switch_cost([turn], COST, 2, wide=16, match_min=2, match_wide=4, mtp_k=1,
                      mtp_cost=0.1)
    assert got == pytest.approx(4 * (COST(2) + 0.1))
    # k = 2 keeps at most 2 and pays two drafts per step; M counts the chain (here <= 1)
    got2 = switch_cost([turn], COST, 2, wide=16, match_min=2, match_wide=4, mtp_k=2,
                       mtp_cost=0.1)
    assert got2 == pytest.approx(4 * (COST(3) + 0.2))
    # where the lookup drafts (p 1, a long match), its rule runs; the module only elsewhere
    # (p 1 wide keeps 4 -> 6; p 6 the module's draft, right -> 8)
    L2, P2, S2 = [0, 4, 0, 0, 0, 0, 0, 0], [0, 15] + [0] * 6, [0, 8] + [0] * 6
    got3 = switch_cost([(L2, P2, S2, M)], COST, 2, wide=16, match_min=2, match_wide=4,
                       mtp_k=1, mtp_cost=0.1)
    assert got3 == pytest.approx(COST(16) + (COST(2) + 0.1))
    with pytest.raises(ValueError, match="MTP hits"):
        switch_cost([(L, P, S)], COST, 2, mtp_k=1)


def test_mtp_hits_are_the_drafters_own(tiny):
    """mtp_hits runs the main model once over prompt + output; each position's count equals
    drafting with a cache that holds only prompt + output[:p] (no look ahead)."""
    from agentfast.spec_decode.mtp import MtpDrafter, init_module
    from agentfast.spec_decode.tsim import mtp_hits

    cfg, m = tiny.config, tiny.backend.model
    sd = init_module(cfg, tiny.model.weights, seed=5)
    d = MtpDrafter.from_weights(cfg, sd, m.w.embed, m.w.lm_head, 128)
    prompt = tiny.tokenizer.encode("def add(a, b):\n    return a + b\n")
    out = tiny.tokenizer.encode(" add(1, 2) add(1, 2) add(3, 4)")
    # make some drafts right: the output follows the module's own first drafts at a few places
    M = mtp_hits(d, m, prompt, out, k=2)
    assert len(M) == len(out) and all(0 <= x <= 2 for x in M)
    for p in range(len(out)):
        d2 = MtpDrafter.from_weights(cfg, sd, m.w.embed, m.w.lm_head, 128)
        cache = m.new_cache(keep_hidden=True)
        m.forward(torch.tensor(prompt + out[:p]), 0, cache)
        d2.bind(cache)
        props = d2.propose(prompt + out[:p], 2)
        want = 0
        while want < len(props) and p + want < len(out) and props[want] == out[p + want]:
            want += 1
        assert M[p] == want, p
    # an output made of the module's drafts is found: every position's first draft right
    seq = list(prompt)
    for _ in range(6):
        cache = m.new_cache(keep_hidden=True)
        m.forward(torch.tensor(seq), 0, cache)
        d.bind(cache)
        seq.append(d.propose(seq, 1)[0])
    own = seq[len(prompt):]
    assert all(x >= 1 for x in mtp_hits(d, m, prompt, own, k=2)[:-1])


def test_parse_costs():
    assert parse_costs("1:500,4:750") == {1: 500.0, 4: 750.0}
    assert parse_costs("small")[1] == 1.0
    for bad in ("4:2", "x", "1:0"):
        with pytest.raises((SystemExit, ValueError)):
            parse_costs(bad)


def test_cli_on_the_tiny_model(llama_dir, tmp_path, capsys):
    out = tmp_path / "tsim.json"
    assert main(["-m", str(llama_dir), "--trace", "repeat_tool_output", "-n", "12",
                 "--costs", "1:1,4:1.5,16:2", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    kinds = {r["kind"]: r for r in rec["records"]}
    assert set(kinds) == {"repeat_tool_output", "all"}
    sp = kinds["all"]["speedup"]
    assert sp["oracle"] >= sp["T=4"] > 0 and "T=16/plain" in sp
    assert "repeat_tool_output:" in capsys.readouterr().out
    assert main(["-m", str(llama_dir), "--trace", "repeat_tool_output", "-n", "8", "--costs",
                 "1:1,4:1.5,16:2", "--tree", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    sp = {r["kind"]: r["speedup"] for r in rec["records"]}["all"]
    assert all(sp[f"T={T} {w}"] > 0 for T in (4, 8, 16) for w in ("chain", "tree"))
    trees = [t for d in rec["traces"].values() for t in d["trees"]]
    turns = [t for d in rec["traces"].values() for t in d["turns"]]
    assert len(trees) == len(turns) and all(
        len(tr["15"]) == len(t[0]) for tr, t in zip(trees, turns, strict=True))
    assert main(["-m", str(llama_dir), "--trace", "repeat", "-n", "4", "--costs", "small",
                 "--costs", "large", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["records"]) == 4  # 2 tables x (the kind, all)


def test_cli_prices_the_mtp_fallback(llama_dir, tiny, tmp_path):
    from agentfast.spec_decode import mtp as M

    path = M.save_module(tmp_path / "m.mtp.safetensors",
                         M.init_module(tiny.config, tiny.model.weights, seed=2), {})
    out = tmp_path / "tsim.json"
    assert main(["-m", str(llama_dir), "--trace", "plain_chat", "-n", "10", "--costs",
                 "1:1,2:1.2,3:1.4,16:2", "--mtp", str(path), "--mtp-cost", "0.1",
                 "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    sp = {r["kind"]: r["speedup"] for r in rec["records"]}["all"]
    assert sp["by match + MTP k=1"] > 0 and sp["by match + MTP k=2"] > 0
    turns = [t for d in rec["traces"].values() for t in d["turns"]]
    assert turns and all(len(t) == 4 and len(t[3]) == len(t[0]) for t in turns)


def test_cli_refuses_a_bad_mtp_option(llama_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["-m", str(llama_dir), "--mtp-cost", "-1"])
    assert "--mtp-cost" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-m", str(llama_dir), "--trace", "plain_chat", "-n", "2", "--mtp",
              str(tmp_path / "missing.mtp.safetensors")])
    assert "no such MTP module file" in capsys.readouterr().err


def test_device_policy_pauses_where_drafts_do_not_pay():
    from agentfast.spec_decode.tsim import device_cost

    n = 200
    copy = [min(15, n - 1 - p) for p in range(n)]  # a long copy: every draft kept
    flat = StepCost({1: 1.0})
    c, cp = device_cost([(copy, copy)], flat, 9, launch=1.0)
    assert cp == n - 1 + 1.0  # plain: one launch, a step per token
    assert c == steps_cost(copy, flat, 9) + 1.0  # never pauses: one launch of T = 9 steps
    nothing = [0] * n  # no draft ever kept, a T = 9 step at 2 plain steps
    dear = StepCost({1: 1.0, 16: 2.0})
    c, cp = device_cost([(nothing, nothing)], dear, 9, launch=1.0)
    assert cp < c < steps_cost(nothing, dear, 9)  # pays for its probes, less than never pausing
    c_more, _ = device_cost([(nothing, nothing)], dear, 9, launch=1.0, max_probe_every=8)
    assert c_more > c  # probing more often costs more where nothing is ever kept
