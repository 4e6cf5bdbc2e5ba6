"""The planner: records, coverage of every op's rows, balance, dependencies, ranks."""

from __future__ import annotations

import pytest
from mk_utils import cfg

from agentfast.engine.bench.models import SHAPES
from agentfast.engine.config import ModelConfig
from agentfast.kernels.monokernel import plan as P

QWEN3_1P7B = ModelConfig(arch="qwen3", vocab_size=151936, hidden_size=2048,
                         intermediate_size=6144, num_layers=28, num_heads=16, num_kv_heads=8,
                         head_dim=128, qk_norm=True, tie_word_embeddings=True)


def _rows(p: P.Plan, rank: int, seq: int) -> list[int]:
    return sorted(r for i in p.instructions(rank) if i.seq == seq for r in range(i.start, i.end))


def test_records_and_table():
    c = cfg("llama_gqa_tied_hd64")
    p = P.plan(c, 3, 1, 64)
    recs, offs = p.table()
    assert recs.shape[1] == P.RECORD and offs[0] == 0 and offs[-1] == len(recs)
    assert len(offs) == p.num_programs + 1
    ins = p.instructions()
    assert [list(r) for r in recs] == [i.serialize() for i in ins]
    assert p.oproj_merge and not any(i.opcode == P.OPROJ for i in ins)  # T = 1: OPROJ_M
    o = next(i for i in ins if isinstance(i, P.OProjMerge))
    gh = c.group_size * c.head_dim
    assert o.serialize()[:8] == [P.OPROJ_M, o.seq, o.layer, o.start, o.end, 0, gh, 0]
    assert all(i.cost > 0 for i in ins)
    p = P.plan(c, 3, 1, 64, tiling=P.Tiling(oproj_merge=False))
    o = next(i for i in p.instructions() if isinstance(i, P.OProj))
    assert o.serialize()[:8] == [P.OPROJ, o.seq, o.layer, o.start, o.end, 0, c.q_size, 0]


@pytest.mark.parametrize("programs", [1, 5, 132])
def test_oproj_merge_tiles(programs):
    """Plan.oproj_merge: OPROJ_M's records cover every (kv head, row) once, rows numbered
    kv head * H + row, each record inside one kv head with that head group's columns; at T = 1
    GATEUP waits for all of its tiles; a T > 1 plan keeps OPROJ after it (its other steps),
    GATEUP's alternative wait (one-position steps) is OPROJ_M. Off where it cannot run (ranks,
    fixed K steps, T-step tiles as records)."""
    c = cfg("llama_gqa_tied_hd64")
    h, gh = c.hidden_size, c.group_size * c.head_dim
    assert P.plan(c, programs, 4, 64).oproj_merge  # on by default at T > 1 too
    for T in (1, 4):
        p = P.plan(c, programs, T, 64, tiling=P.Tiling(oproj_merge=True if T > 1 else None))
        seq = next(o.seq for o in p.ops if o.opcode == P.OPROJ_M)
        assert _rows(p, 0, seq) == list(range(c.num_kv_heads * h))
        for i in (i for i in p.instructions() if i.seq == seq):
            k = i.start // h
            assert (i.end - 1) // h == k and (i.k0, i.k1) == (k * gh, (k + 1) * gh)
        gu = next(i for i in p.instructions() if i.opcode == P.GATEUP and i.layer == 0)
        names = [P.OP_NAMES[o.opcode] for o in p.ops[seq - 1:gu.seq + 1]]
        if T == 1:
            assert names == ["ATTN", "OPROJ_M", "GATEUP"]
            assert (gu.wait_seq, gu.wait_count) == (seq, p.ops[seq].tiles)
        else:
            assert names == ["ATTN", "OPROJ_M", "OPROJ", "GATEUP"]
            assert (gu.wait_seq, gu.alt_seq, gu.alt_count) == (seq + 1, seq, p.ops[seq].tiles)
        assert p.op_stages(P.OPROJ_M) >= 2
    assert not P.plan(c, programs, 1, 64, ranks=2).oproj_merge
    assert not P.plan(c, programs, 1, 64, tiling=P.Tiling(bk=64)).oproj_merge
    assert not P.plan(c, programs, 4, 64, tiling=P.Tiling(one_tiles=False)).oproj_merge
    with pytest.raises(AssertionError, match="oproj_merge"):
        P.plan(c, programs, 4, 64, tiling=P.Tiling(oproj_merge=True, one_tiles=False))


@pytest.mark.parametrize("programs", [1, 5, 132])
def test_every_tile_once_and_dependencies(programs):
    c = cfg("qwen3_qknorm_hd128")
    p = P.plan(c, programs, 4, 64)
    full = {P.QKV: c.q_size + 2 * c.kv_size, P.ATTN: c.num_kv_heads * p.splits,
            P.OPROJ: c.hidden_size, P.OPROJ_M: c.num_kv_heads * c.hidden_size,
            P.GATEUP: c.intermediate_size,
            P.DOWN: c.hidden_size, P.LMHEAD: c.vocab_size, P.SAMPLE: 1}
    for op in p.ops:
        assert _rows(p, 0, op.seq) == list(range(full[op.opcode])), op.name
        runs = [i for i in p.instructions() if i.seq == op.seq]
        assert sum(i.signal for i in runs) == op.tiles
        for i in runs:  # each op waits for the one before it; the first for the last SAMPLE
            prev = p.ops[op.seq - 1] if op.seq else p.ops[-1]
            assert (i.wait_seq, i.wait_count, i.wait_prev) == (prev.seq, prev.tiles,
                                                              op.seq == 0)
    for prog in p.programs[0]:  # op order within every program
        assert [i.seq for i in prog] == sorted(i.seq for i in prog)
    sample = [i for i in p.instructions() if i.opcode == P.SAMPLE]
    assert len(sample) == 1 and p.programs[0][-1][-1] is sample[0]


def test_balanced_by_bytes():
    p = P.plan(QWEN3_1P7B, 264, 1, 4096)
    for op in p.ops:
        if op.opcode in (P.QKV, P.OPROJ, P.GATEUP, P.DOWN, P.LMHEAD):
            cost = [sum(i.cost for i in prog if i.seq == op.seq) for prog in p.programs[0]]
            tile = max(i.cost // i.signal for i in p.instructions() if i.seq == op.seq)
            assert max(cost) - min(cost) <= tile, op.name  # at most one tile apart
    assert p.splits == 32  # 264 programs / 8 kv heads, capped


def test_two_ranks_split_heads_and_ffn():
    c = cfg("llama_obias_hd64")  # 6 heads, 2 kv heads, I = 192
    p = P.plan(c, 4, 1, 64, ranks=2)
    names = [P.OP_NAMES[o.opcode] for o in p.ops[:7]]
    assert names == ["QKV", "ATTN", "OPROJ", "ALLREDUCE", "GATEUP", "DOWN", "ALLREDUCE"]
    assert p.n_counters == len(p.ops) + c.num_layers * 1  # a ticket per layer and local kv head
    hd, q, kv = c.head_dim, c.q_size, c.kv_size
    for r in range(2):
        qkv = _rows(p, r, 0)
        want = (list(range(r * 3 * hd, (r + 1) * 3 * hd)) + list(range(q + r * hd, q + (r + 1)
                * hd)) + list(range(q + kv + r * hd, q + kv + (r + 1) * hd)))
        assert qkv == want
        assert _rows(p, r, 4) == list(range(r * 96, (r + 1) * 96))  # gate/up columns
        down = [i for i in p.instructions(r) if i.opcode == P.DOWN]
        assert {(i.k0, i.k1, i.partial) for i in down} == {(r * 96, (r + 1) * 96, True)}
        oproj = [i for i in p.instructions(r) if i.opcode == P.OPROJ]
        assert {(i.k0, i.k1) for i in oproj} == {(r * 3 * hd, (r + 1) * 3 * hd)}
        assert _rows(p, r, 5) == list(range(c.hidden_size))  # every rank: all of x
    ar = [i for i in p.instructions(0) if i.opcode == P.ALLREDUCE]
    assert [i.bias for i in ar] == [True, False] * c.num_layers


def test_truncated_and_limits():
    p = P.plan(cfg("llama_gqa_tied_hd64"), 2, 1, 64)
    cut = p.truncated(3)
    assert max(i.seq for i in cut.instructions()) == 3 and cut.last_seq == 3
    assert "instructions" in p.describe()
    with pytest.raises(AssertionError, match="tl.dot"):
        P.plan(cfg("llama_gqa_tied_hd64"), 2, 4, 64, tiling=P.Tiling(bn_lm_t=8))
    t4 = P.plan(cfg("llama_gqa_tied_hd64"), 2, 4, 64, tiling=P.Tiling(bn=8, fma_t=False))
    assert min(bn for bn, _ in t4.blocks_t.values()) == 16  # T > 1: tl.dot wants 16 rows
    t1 = P.plan(cfg("llama_gqa_tied_hd64"), 2, 1, 64, tiling=P.Tiling(bn=8, oproj_merge=False))
    mv = (P.QKV, P.OPROJ, P.GATEUP, P.DOWN)
    assert all(t4.blocks[op] == t1.blocks[op] for op in mv)  # one_tiles: T = 1's records
    assert ([o.tiles for o in t4.ops if o.opcode in mv]
            == [o.tiles for o in t1.ops if o.opcode in mv])
    old = P.plan(cfg("llama_gqa_tied_hd64"), 2, 4, 64,
                 tiling=P.Tiling(bn=8, fma_t=False, one_tiles=False))
    assert min(bn for bn, _ in old.blocks.values()) == 16 and old.blocks == old.blocks_t
    t4 = P.plan(cfg("llama_gqa_tied_hd64"), 2, 4, 64, tiling=P.Tiling(bn=8))
    assert t4.fma_t and all(t4.blocks_t[op][0] == 8 for op in t4.fma_t)  # FMA tiles: any rows


def test_block_sizes():
    """Rows per tile: the most (<= 16) that gives each program two tiles; BK near the chunk,
    padding K least (Qwen3-1.7B's 6144-wide down projection: 3 steps of 2048, not 2 of 4096)."""
    t = P.Tiling()
    assert P.block_sizes(4096, 2048, 264, 1, t) == (4, 2048)
    assert P.block_sizes(2048, 6144, 264, 1, t) == (2, 2048)
    assert P.block_sizes(960, 576, 264, 1, t) == (1, 1024)
    assert P.block_sizes(12288, 2048, 264, 1, t, gated=True) == (16, 256)
    assert P.block_sizes(2048, 6144, 264, 4, t) == (16, 512)
    assert P.block_sizes(2048, 6144, 264, 1, P.Tiling(bn=8, bk=128)) == (8, 128)
    # T = 1 whole rows: BK covers K, tiles of at most `chunk` weights (x read once per op)
    assert P.block_sizes(4096, 2048, 264, 1, t, whole_k=True) == (4, 2048)
    assert P.block_sizes(2048, 6144, 264, 1, t, whole_k=True) == (1, 8192)
    assert P.block_sizes(12288, 2048, 264, 1, t, gated=True, whole_k=True) == (2, 2048)
    assert P.block_sizes(960, 576, 264, 1, t, whole_k=True) == (4, 1024)  # one tile/program
    assert P.block_sizes(960, 576, 264, 1, P.Tiling(tiles=4), whole_k=True) == (1, 1024)
    assert P.block_sizes(2048, 2048, 264, 1, t, whole_k=True) == (4, 2048)
    assert P.block_sizes(2048, 6144, 264, 4, t, whole_k=True) == (16, 512)
    with pytest.raises(AssertionError, match="ranks"):
        P.plan(cfg("mistral_window_hd64"), 2, 1, 64, ranks=2)  # 1 kv head


def test_fma_t_blocks():
    """T > 1 FMA tiles: T = 1's whole rows, BN halved until BN x T (pow2) x BK (x2 gate/up)
    fits fma_t_elems; none above fma_t_max, for T = 1, with fma_t off, or when one row does
    not fit (tl.dot tiles then)."""
    t = P.Tiling()
    assert P.fma_t_blocks(960, 576, 264, 4, t) == (4, 1024)  # SmolLM2 QKV: 4 x 4 x 1024
    assert P.fma_t_blocks(1536, 576, 264, 4, t, gated=True) == (2, 1024)
    assert P.fma_t_blocks(4096, 2048, 264, 3, t) == (2, 2048)  # 3 positions pad to 4
    assert P.fma_t_blocks(6144, 2048, 264, 4, t, gated=True) == (1, 2048)
    assert P.fma_t_blocks(2048, 6144, 264, 4, t) is None  # BK 8192 x 4 > 16384 for 1 row
    assert P.fma_t_blocks(960, 576, 264, 8, t) is None  # above fma_t_max
    assert P.fma_t_blocks(960, 576, 264, 1, t) is None
    assert P.fma_t_blocks(960, 576, 264, 4, P.Tiling(fma_t=False)) is None
    smol = SHAPES["smollm2-135m"]
    assert P.plan(smol, 264, 4, 4096).fma_t == {P.QKV, P.OPROJ, P.GATEUP, P.DOWN}
    assert P.plan(smol, 264, 8, 4096).fma_t == frozenset()
    t4 = P.plan(smol, 264, 4, 4096)  # the T-steps' FMA tiles halve T = 1's (the records')
    assert t4.blocks_t[P.DOWN] == (2, 2048) and t4.blocks[P.DOWN] == (4, 2048)


def test_timeline_summary_of_a_synthetic_trace():
    """tune.timeline_summary on stamps laid out by hand: every op's records wake 1 us after the
    producer's last release and work (1 + program) us; spans add up to the step."""
    import numpy as np

    from agentfast.kernels.monokernel.tune import timeline_summary

    c = cfg("llama_gqa_tied_hd64")
    pl = P.plan(c, 3, 1, 64)
    tr = np.zeros((3, max(len(p) for p in pl.programs[0]), 8), dtype=np.int64)
    where: dict[tuple[int, int], list[int]] = {}  # (op, program) -> its records (O-proj: 1-2)
    for p, prog in enumerate(pl.programs[0]):
        for j, i in enumerate(prog):
            where.setdefault((i.seq, p), []).append(j)
    ready = 10_000
    for op in pl.ops:
        end = ready
        for p in range(3):
            for j in where.get((op.seq, p), []):
                tr[p, j, [0, 1, 7]] = (ready - 500, ready + 1000, ready + 1000 + 1000 * (1 + p))
                if op.opcode == P.ATTN and p != 1:  # a phase mark some records have
                    tr[p, j, 2] = ready + 1000 + 300 * (1 + p)
                end = max(end, int(tr[p, j, 7]))
        ready = end
    s = timeline_summary(pl, tr)
    assert s["step_us"] == pytest.approx((ready - 9_500) / 1e3)
    assert sum(k["span_us"] for k in s["ops"].values()) == pytest.approx(s["step_us"])
    qkv = s["ops"]["QKV"]
    assert qkv["n"] == c.num_layers and qkv["sync_us"] == pytest.approx(1.0, abs=0.6)
    # every record wakes 1 us after its producer's last release (the step's first op: after
    # the step's first start, 0.5 us earlier)
    down = s["ops"]["DOWN"]
    assert down["wake_med_us"] == pytest.approx(1.0) and down["wake_max_us"] == pytest.approx(1.0)
    assert qkv["wake_max_us"] == pytest.approx(1.0 + 0.5 / c.num_layers)
    assert s["ops"]["SAMPLE"]["busy_max_us"] == pytest.approx(3.0)  # the last program samples
    assert qkv["busy_max_us"] >= qkv["busy_med_us"] >= 2.0
    assert "phase2_us" not in qkv  # no marks: no phases
    assert s["ops"]["ATTN"]["phase2_us"] == pytest.approx(0.9)  # median of 0.3 and 0.9 us


@pytest.mark.parametrize("programs", [1, 3, 7])
def test_kind_tables_drop_idle_records_and_keep_counts(programs):
    """Tiling.kind_tables: the one-position steps' records hold no OPROJ but one per layer,
    the others' no OPROJ_M and no ATTN run wholly past a T-step's splits but one per layer,
    and every op's counter still gets the plan's whole count a step (the waits' targets);
    the table holds both kinds, the one-position steps' first."""
    import collections

    c = cfg("llama_gqa_tied_hd64")
    p = P.plan(c, programs, 8, 64, tiling=P.Tiling(attn_splits=4, attn_splits_t=2,
                                                  kind_tables=True))
    assert p.kind_tables and p.oproj_merge and p.split_ratio == 2
    full = collections.Counter()
    for i in p.instructions():
        full[i.seq] += i.signal
    for one, idle in ((True, P.OPROJ), (False, P.OPROJ_M)):
        progs = p.kind_programs(one)
        got = collections.Counter()
        for i in (i for q in progs for i in q):
            got[i.seq] += i.signal
        assert got == full
        assert sum(i.opcode == idle for q in progs for i in q) == c.num_layers
        def past_splits(ins):  # an ATTN run whose tiles a T-step leaves alone
            return ins.opcode == P.ATTN and all(t % p.splits >= 2 for t in range(ins.start,
                                                                                  ins.end))

        n_past = sum(past_splits(i) for q in progs for i in q)
        full_past = sum(past_splits(i) for i in p.instructions())  # (7 programs: some)
        assert full_past > 0 or programs < 7
        if one:  # (a one-position step attends in all of them)
            assert n_past == full_past
        else:
            assert n_past <= min(full_past, c.num_layers)
        for q, full_q in zip(progs, p.programs[0], strict=True):  # op order kept
            assert [i.seq for i in q] == sorted(i.seq for i in q)
            assert len(q) <= len(full_q)
    recs, offs = p.table()
    n_one = sum(len(q) for q in p.kind_programs(True))
    assert len(offs) == 2 * (programs + 1) and offs[programs] == n_one == offs[programs + 1]
    assert offs[-1] == len(recs)
    assert P.plan(c, programs, 8, 64).kind_tables  # on by default at T > 1
    assert not P.plan(c, programs, 1, 64, tiling=P.Tiling(kind_tables=True)).kind_tables


@pytest.mark.parametrize("programs", [1, 5])
def test_narrow_merge_walks_three_tables(programs):
    """Tiling.narrow_merge: OPROJ_M merges the narrow steps' splits too; the narrow steps then
    walk a table of their own, with no OPROJ but one per layer (as the one-position steps'),
    the wide steps' no OPROJ_M but one per layer; each kind keeps every op's whole count; off
    where the narrow steps' gate/up and down are not on the FMA path, an error when asked."""
    import collections

    c = cfg("llama_gqa_tied_hd64")
    p = P.plan(c, programs, 8, 64, tiling=P.Tiling(narrow=2, narrow_merge=True))
    assert p.narrow_merge and p.kinds == [1, 2, 0]
    assert p.merges(1) and p.merges(2) and not p.merges(0)
    full = collections.Counter()
    for i in p.instructions():
        full[i.seq] += i.signal
    tables = {k: p.kind_programs(k) for k in p.kinds}
    for kind, idle in ((1, P.OPROJ), (2, P.OPROJ), (0, P.OPROJ_M)):
        got = collections.Counter()
        for i in (i for q in tables[kind] for i in q):
            got[i.seq] += i.signal
        assert got == full
        assert sum(i.opcode == idle for q in tables[kind] for i in q) == c.num_layers
    recs, offs = p.table()
    assert len(offs) == 3 * (programs + 1) and offs[-1] == len(recs)
    n1, n2 = (sum(len(q) for q in tables[k]) for k in (1, 2))
    assert offs[programs] == n1 == offs[programs + 1]
    assert offs[2 * programs + 1] == n1 + n2 == offs[2 * programs + 2]
    # without it the narrow steps share the wide steps' table (kind 2's records are kind 0's)
    q = P.plan(c, programs, 8, 64, tiling=P.Tiling(narrow=2, narrow_merge=False))
    assert not q.narrow_merge and q.kinds == [1, 0] and q.kind_programs(2) == q.kind_programs(0)
    # None (the default): on where the narrow gate/up and down run the FMA path
    assert P.plan(c, programs, 8, 64, tiling=P.Tiling(narrow=2)).narrow_merge
    no_fma = P.Tiling(narrow=2, narrow_merge=None, fma_t=False)
    assert not P.plan(c, programs, 8, 64, tiling=no_fma).narrow_merge
    with pytest.raises(AssertionError, match="narrow_merge"):
        P.plan(c, programs, 8, 64, tiling=P.Tiling(narrow=2, narrow_merge=True, fma_t=False))
    with pytest.raises(AssertionError, match="narrow_merge"):
        P.plan(c, programs, 8, 64, tiling=P.Tiling(narrow_merge=True))  # no narrow steps


def test_attn_wait_loop_and_its_block():
    """Tiling.attn_wait_loop None: on at every head_dim (with attn_new_last its blocks go from
    shared memory into the dots: 64-key blocks at head_dim 128 too, H200 session 35); it needs
    OPROJ_M's merge and attn_fold, whatever it says. The default block (16-bit weights, T = 1
    and a T > 1 kernel's one-position steps): 64 keys on the loop path, else 4096 / head_dim
    (held in registers across the wait); 32 in T-position steps and in fp32."""
    hd64, hd128 = cfg("llama_gqa_tied_hd64"), cfg("qwen3_qknorm_hd128")
    assert P.plan(hd64, 2, 1, 64).attn_wait_loop
    assert P.plan(hd128, 2, 1, 64).attn_wait_loop
    assert not P.plan(hd128, 2, 1, 64, tiling=P.Tiling(attn_wait_loop=False)).attn_wait_loop
    for hd, c in ((64, hd64), (128, hd128)):
        for loop in (None, False):
            p = P.plan(c, 2, 1, 256, tiling=P.Tiling(attn_wait_loop=loop), wbytes=2)
            assert p.tiling.attn_block == (64 if loop is None else 4096 // hd), (hd, loop)
        assert P.plan(c, 2, 1, 256, wbytes=4).tiling.attn_block == 32
        p4 = P.plan(c, 2, 4, 256, wbytes=2)
        assert p4.tiling.attn_block == 32 and p4.block_one == 64
    assert not P.plan(hd64, 2, 1, 64, tiling=P.Tiling(attn_wait_loop=False)).attn_wait_loop
    assert not P.plan(hd64, 2, 1, 64, tiling=P.Tiling(attn_fold=False)).attn_wait_loop
    assert not P.plan(hd64, 2, 1, 64, tiling=P.Tiling(oproj_merge=False)).attn_wait_loop
    assert P.plan(hd64, 2, 4, 64).attn_wait_loop  # a T > 1 kernel's one-position steps


def test_per_op_stage_caps():
    """Tiling.stages_qkv / stages_om / stages_gu / stages_dn cap one op's pipeline depth each
    (0: Tiling.stages); the other ops and the floor of 2 stages stay."""
    c = SHAPES["llama-3.2-1b"]
    base = P.plan(c, 264, 1, 2048)
    assert all(base.op_stages(o) == 3 for o in (P.QKV, P.OPROJ_M, P.GATEUP, P.DOWN, P.LMHEAD))
    caps = {P.QKV: "stages_qkv", P.OPROJ_M: "stages_om", P.GATEUP: "stages_gu",
            P.DOWN: "stages_dn"}
    for op, key in caps.items():
        p = P.plan(c, 264, 1, 2048, tiling=P.Tiling(**{key: 2}))
        assert p.op_stages(op) == 2
        assert all(p.op_stages(o) == 3 for o in (*caps, P.LMHEAD) if o != op)
    assert P.plan(c, 264, 1, 2048, tiling=P.Tiling(stages_gu=1)).op_stages(P.GATEUP) == 2
    with pytest.raises(AssertionError, match="stage caps"):
        P.plan(c, 264, 1, 2048, tiling=P.Tiling(stages_gu=-1))
