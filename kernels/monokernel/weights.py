"""Weights stacked per kind, the buffers of one sequence, and the layout of its state.

The kernel addresses layer l's weights as base + l * stride, so the model's per-layer tensors
are copied into stacked tensors ([L, rows, cols]: q|k|v fused, gate|up fused) and the
reference model's LayerWeights are pointed at views of them: one copy in memory serves the
reference prefill and the kernel. Buffers are plain tensors shared by the VM and the kernel
(one naming, so diff.py compares them by name). Knows shapes and layouts, not the math.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from agentfast.engine.config import ModelConfig
from agentfast.engine.model import ModelWeights

from .plan import Plan

# int32 `state` slots
(POS, N_OUT, DONE, MODE, TOP_K, MAX_NEW, N_STOP, N_DRAFT, SEED_LO, SEED_HI, CAPACITY,
 STEPS) = range(12)  # STEPS: steps SAMPLE completed since start_sequence
# structured outputs (the `c_*` tables of Buffers): C_ON 1 when a constraint is active,
# C_WORDS int32 words per bitmask row, C_EOS the id written when a state allows only EOS,
# C_START -1, or (timing only) the state to restart at instead of ending there, C_STATE + t the
# automaton state before the token at position t of the step (t < T <= 16; -1: dead)
C_ON, C_WORDS, C_EOS, C_START, C_STATE = 12, 13, 14, 15, 16
# the device n-gram drafter (start_drafting; ops_sample.sample_run): D_ON 1 when it runs (SAMPLE
# appends every emitted token to `hist`, and a kernel of T > 1 drafts the next step itself),
# N_HIST tokens in `hist`, HIST_CAP its size, D_NMIN / D_NMAX the n-gram lengths tried, D_K
# drafts per step (<= T - 1), D_GUESSED how many of this step's inputs are the drafter's (not
# forced by a constraint: what the counts count), D_EWMA the running mean of the tokens a step
# keeps past its first (accepted drafts, Q16: 65536 = one token), D_ALPHA its weight per step
# (Q16), D_FLOOR the pause threshold (Q16: a step whose mean falls below it ends the launch with
# DONE_PAUSE; negative: never), D_PROBE 1: the next step's count replaces the mean (a probe),
# D_STEPS / D_DRAFTED / D_ACCEPTED steps that carried the drafter's drafts, those drafts, and the
# accepted ones, since start_drafting
(D_ON, N_HIST, HIST_CAP, D_NMIN, D_NMAX, D_K, D_GUESSED, D_EWMA, D_ALPHA, D_FLOOR, D_PROBE,
 D_STEPS, D_DRAFTED, D_ACCEPTED) = range(32, 46)
# slot 46: unused (start_drafting writes D_ON .. D_BY_WIDTH + 2 as one slice)
# per-step switching (a kernel of T > 1 positions): STEP_ONE 1 runs the coming step as a T = 1
# step (one position, on the T = 1 code paths of the same tiles), 0 on all T positions; with
# D_SWITCH set, SAMPLE sets STEP_ONE after each step: 1 when the device drafter proposes
# nothing for the next one (start_drafting(switch=True); the host sets it for a launch's first
# step, set_step_inputs(switch=True))
STEP_ONE, D_SWITCH = 47, 48
# switching with a floor: while the running mean D_EWMA is below D_FLOOR the steps run as one
# position even where the lookup has drafts, except a probe (its count replaces the mean) after
# D_WAIT such steps reach D_EVERY; a probe that leaves the mean below the floor doubles D_EVERY
# (to D_EVERY_MAX), one above it resets it to D_EVERY0
D_WAIT, D_EVERY, D_EVERY0, D_EVERY_MAX = 49, 50, 51, 52
# narrow and wide steps (a kernel with Tiling.narrow): with D_WIDE set, a step the rule above
# runs with drafts runs narrow (STEP_ONE 2: the kernel's narrow positions), or at all T
# positions (STEP_ONE 0) when the step before was narrow or wide and kept at least D_NEED of
# its drafts
D_WIDE, D_NEED = 53, 54
# the lookup's confidence (switching): D_CONF, set by the drafter with the next step's drafts,
# is the length of the match behind its proposal (the n-gram found, extended back while the
# tokens before both occurrences agree, up to MATCH_CAP more) when the lookup proposed, or the
# automaton-forced drafts if more; a drafting step runs as one position when its drafts are all
# the lookup's and D_CONF is below D_MATCH_MIN, and (with D_WIDE) at all T positions when
# D_CONF reaches D_MATCH_WIDE (0: neither).
# SuffixDecoding's rule (Oliaro et al., 2024): the longer the match, the longer the draft that
# pays. D_BY_WIDTH + code: steps run at each width code (STEP_ONE: 0 T, 1 one, 2 narrow) since
# start_drafting
D_CONF, D_MATCH_MIN, D_MATCH_WIDE, D_BY_WIDTH = 55, 56, 57, 58  # D_BY_WIDTH .. + 2
MATCH_CAP = 16
# the MTP module in the kernel (a plan with mtp=True, start_mtp): M_ON 1 when its draft is the
# lookup's fallback: after SAMPLE the module's layer runs over the kept positions since it last
# ran (M_POS, M_W below; its K/V at layer L of the cache), its head over the last kept one,
# and MTP_SAMPLE makes the next step narrow with the module's draft where SAMPLE left it one
# position (the lookup had no usable draft) and the draft's probability is at least
# M_FLOOR (Q16); M_USED 1: the coming step verifies the module's draft (SAMPLE counts it in
# M_STEPS / M_ACCEPTED, not in the lookup's counts and mean)
M_ON, M_FLOOR, M_USED, M_STEPS, M_ACCEPTED = 61, 62, 63, 64, 65
# a module fill (plan(fill=True), start_fill): M_FILL 1, the module's K/V of positions POS ..
# FILL_END - 1 from the kept hidden states and `hist` holding the tokens by position
M_FILL, FILL_END = 66, 67
# the module's positions (a decode plan with mtp=True): M_KV the first position without its
# K/V, M_POS / M_W the positions its ops run over this step ([M_POS, M_POS + M_W), set by
# SAMPLE; M_W 0: the module's ops skip, releasing their counters at once), M_LAZY 1: it runs
# only where its draft may be used (SAMPLE left the next step one position: the lookup has
# none), over the kept positions since M_KV (at most T: older ones keep stale K/V, which only
# lowers its drafts' acceptance); 0: after every step, over the step's kept positions
M_KV, M_POS, M_W, M_LAZY = 68, 69, 70, 71
# KEEP_HIDDEN 1: SAMPLE copies the residual stream x (the final hidden state before the final
# norm) of each position whose K/V the step keeps, pos .. pos + emitted - 1, to `hidden` at that
# position (the KV cache's KVCache.hidden: what MTP drafters read; start_sequence(keep_hidden=))
KEEP_HIDDEN = 72
STATE_SIZE = 73
Q16 = 1 << 16
TEMP, TOP_P = 0, 1  # fp32 `fparams` slots
H_PROGRESS, H_CANCEL, H_DONE, HOST_HDR = 0, 1, 2, 4  # host-visible int32 buffer, then the ring
# why a sequence ended (state[DONE], host[H_DONE])
DONE_STOP, DONE_LENGTH, DONE_CANCEL, DONE_CAPACITY, DONE_ERROR = 1, 2, 3, 4, 5
# the launch ended, the sequence did not: the device drafter's acceptance fell below D_FLOOR
# (state[DONE] only, never host[H_DONE]; the host clears it and decodes on, plainly)
DONE_PAUSE = 6
GREEDY, TEMPERATURE, FILTERED = 0, 1, 2  # state[MODE]
# err: [code, record, seq, wait_seq, target, seen, program, step]
ERR_WAIT, ERR_CAP, ERR_OPCODE, ERR_DEAD = 1, 2, 3, 4  # ERR_DEAD: [code, -1, seq, token, state]
ERR_LL = 5  # a wait for QKV's tagged words (Tiling.qkv_ll): target the tag, seen the oldest
ERR_SIZE = 8


@dataclass
class MonoWeights:
    w_qkv: torch.Tensor  # [L, q + 2kv, H]
    b_qkv: torch.Tensor | None  # [L, q + 2kv] fp32
    attn_norm: torch.Tensor  # [L, H] fp32
    q_norm: torch.Tensor | None  # [L, hd] fp32 (Qwen3)
    k_norm: torch.Tensor | None
    w_o: torch.Tensor  # [L, H, q]
    b_o: torch.Tensor | None  # [L, H] fp32
    mlp_norm: torch.Tensor  # [L, H] fp32
    w_gu: torch.Tensor  # [L, 2I, H]: gate rows, then up rows
    w_down: torch.Tensor  # [L, H, I]
    norm: torch.Tensor  # [H] fp32
    embed: torch.Tensor  # [V, H]
    lm_head: torch.Tensor  # [V, H] (the embedding itself when tied)
    cos: torch.Tensor  # [max_pos, hd] fp32
    sin: torch.Tensor
    # an MTP module (attach_mtp): its decoder layer is layer L of the stacked tensors above
    # (which then hold L + 1), its input projection and norms here
    w_eh: torch.Tensor | None = None  # [H, 2H]: [enorm(embed(next token)); hnorm(h)] -> H
    enorm: torch.Tensor | None = None  # [H] fp32
    hnorm: torch.Tensor | None = None  # [H] fp32
    mtp_norm: torch.Tensor | None = None  # [H] fp32: before the (shared) LM head

    @property
    def has_mtp(self) -> bool:
        return self.w_eh is not None


def pack_weights(cfg: ModelConfig, w: ModelWeights, cos: torch.Tensor,
                 sin: torch.Tensor) -> MonoWeights:
    """Stack `w`'s layers (one layer copied at a time) and point `w`'s layers at the views."""
    q, kv, inter, L = cfg.q_size, cfg.kv_size, cfg.intermediate_size, cfg.num_layers
    lw0 = w.layers[0]

    def stack(get, shape, dtype=None):
        t0 = get(lw0)
        if t0 is None:
            return None
        out = torch.empty((L, *shape), dtype=dtype or t0.dtype, device=t0.device)
        for i, lw in enumerate(w.layers):
            out[i].copy_(get(lw).reshape(shape))
        return out

    h = cfg.hidden_size
    w_qkv = stack(lambda lw: torch.cat([lw.wq, lw.wk, lw.wv]), (q + 2 * kv, h))
    w_gu = stack(lambda lw: torch.cat([lw.w_gate, lw.w_up]), (2 * inter, h))
    b_qkv = stack(lambda lw: None if lw.bq is None else torch.cat([lw.bq, lw.bk, lw.bv]),
                  (q + 2 * kv,), torch.float32)
    mw = MonoWeights(
        w_qkv=w_qkv, b_qkv=b_qkv, attn_norm=stack(lambda lw: lw.attn_norm, (h,)),
        q_norm=stack(lambda lw: lw.q_norm, (cfg.head_dim,)),
        k_norm=stack(lambda lw: lw.k_norm, (cfg.head_dim,)),
        w_o=stack(lambda lw: lw.wo, (h, q)), b_o=stack(lambda lw: lw.bo, (h,), torch.float32),
        mlp_norm=stack(lambda lw: lw.mlp_norm, (h,)), w_gu=w_gu,
        w_down=stack(lambda lw: lw.w_down, (h, inter)), norm=w.norm.float().contiguous(),
        embed=w.embed, lm_head=w.lm_head, cos=cos.contiguous(), sin=sin.contiguous())
    _point_layers(mw, w.layers, q, kv, inter)
    return mw


def _point_layers(mw: MonoWeights, layers: list, q: int, kv: int, inter: int) -> None:
    for i, lw in enumerate(layers):  # the reference reads the stacked copies
        lw.wq, lw.wk, lw.wv = mw.w_qkv[i, :q], mw.w_qkv[i, q:q + kv], mw.w_qkv[i, q + kv:]
        lw.w_gate, lw.w_up = mw.w_gu[i, :inter], mw.w_gu[i, inter:]
        lw.wo, lw.w_down = mw.w_o[i], mw.w_down[i]


def attach_mtp(cfg: ModelConfig, mw: MonoWeights, w: ModelWeights, module) -> MonoWeights:
    """`mw` with an MTP module (spec_decode.mtp.MtpWeights, the main model's embedding and
    LM head shared) for plans built with mtp=True: the stacked per-layer tensors get the
    module's layer as layer L (one copy of them; `w`'s layers pointed at the new views), the
    module's input projection and norms their own fields."""
    assert not mw.has_mtp, "one MTP module per set of weights"
    assert module.embed is None and module.head is None, (
        "an MTP module with its own embedding or head does not run in the kernel")
    q, kv, inter, h = cfg.q_size, cfg.kv_size, cfg.intermediate_size, cfg.hidden_size
    lw = module.layer

    def add(t: torch.Tensor | None, one: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        return torch.cat([t, one.reshape(1, *t.shape[1:]).to(t.dtype)])

    out = MonoWeights(
        w_qkv=add(mw.w_qkv, torch.cat([lw.wq, lw.wk, lw.wv])),
        b_qkv=add(mw.b_qkv, None if lw.bq is None else torch.cat([lw.bq, lw.bk, lw.bv])),
        attn_norm=add(mw.attn_norm, lw.attn_norm), q_norm=add(mw.q_norm, lw.q_norm),
        k_norm=add(mw.k_norm, lw.k_norm), w_o=add(mw.w_o, lw.wo), b_o=add(mw.b_o, lw.bo),
        mlp_norm=add(mw.mlp_norm, lw.mlp_norm),
        w_gu=add(mw.w_gu, torch.cat([lw.w_gate, lw.w_up])), w_down=add(mw.w_down, lw.w_down),
        norm=mw.norm, embed=mw.embed, lm_head=mw.lm_head, cos=mw.cos, sin=mw.sin,
        w_eh=module.eh_proj.to(mw.w_qkv.dtype).contiguous(),
        enorm=module.enorm.float().contiguous(), hnorm=module.hnorm.float().contiguous(),
        mtp_norm=module.norm.float().contiguous())
    assert tuple(out.w_eh.shape) == (h, 2 * h), "eh_proj is [H, 2H]"
    _point_layers(out, w.layers, q, kv, inter)
    return out


@dataclass
class Buffers:
    """Everything one sequence's decode reads and writes besides the weights."""

    # [T, H] model dtype: the residual stream; a plan with mtp=True: [2T, H], rows T.. the
    # MTP module's own
    x: torch.Tensor
    qkv: torch.Tensor  # [T, q + 2kv] fp32
    # [T, q + 2kv] int64: the same as words tagged by step and layer (Plan.qkv_ll, T = 1)
    qkv_ll: torch.Tensor
    att_acc: torch.Tensor  # [nh, S, T, hd] fp32: per-split unnormalized outputs
    att_ml: torch.Tensor  # [2, nh, S, T] fp32: per-split max (log2 units) and sum
    attn: torch.Tensor  # [T, q] model dtype
    part: torch.Tensor  # [T, H] fp32: this rank's partial sum (ranks > 1)
    act: torch.Tensor  # [T, I] model dtype
    logits: torch.Tensor  # [T, V] fp32 (mtp: [T + 1, V], row T the module's head)
    lm_val: torch.Tensor  # [T, n_lm_tiles] fp32: per-tile max (greedy) or Gumbel max (mtp: T + 1)
    lm_idx: torch.Tensor  # [T, n_lm_tiles] int32: its token id (mtp: T + 1 rows)
    lm_stat: torch.Tensor  # [2, T, n_lm_tiles] fp32: per-tile max and sum of exp(l / temp)
    cand: torch.Tensor  # [T, n_cand_lists, cand] int64: per-run top candidates, sorted keys
    tokens: torch.Tensor  # [T] int32: this step's input tokens (last emitted, then drafts)
    state: torch.Tensor  # [STATE_SIZE] int32
    fparams: torch.Tensor  # [2] fp32: temperature, top_p
    stop_ids: torch.Tensor  # [>= 1] int32
    drafts: torch.Tensor  # [max_len] int32: proposal for output index i
    hist: torch.Tensor  # [KV capacity] int32: the sequence's tokens (device drafter, D_ON)
    host: torch.Tensor  # [HOST_HDR + max_len] int32 (pinned on CUDA): progress, cancel, ring
    ctr: torch.Tensor  # [plan.n_counters] int32: dependency counters, then attention tickets
    err: torch.Tensor  # [ERR_SIZE] int32
    k_cache: torch.Tensor  # [L, nkv, capacity, hd]
    v_cache: torch.Tensor
    # [capacity, H] model dtype: the final hidden states by position (the cache's `hidden`),
    # written only when state[KEEP_HIDDEN]; a [1, H] placeholder otherwise
    hidden: torch.Tensor
    # the constraint's TokenAutomaton tables (the graph backend's: constraints/automaton.py),
    # read only when state[C_ON]; 1-element placeholders of the same dtypes otherwise
    c_bitmask: torch.Tensor  # int32 [S, W]
    c_default: torch.Tensor  # int32 [S]
    c_exc_ptr: torch.Tensor  # int32 [S + 1]
    c_exc_tokens: torch.Tensor  # int32 [E]
    c_exc_next: torch.Tensor  # int32 [E]
    c_done: torch.Tensor  # bool [S]
    c_forced: torch.Tensor  # int32 [S]: the only token allowed, or -1 (drafted for free)
    # [2, n_lm_tiles] fp32: the MTP head's per-tile max and sum of exp(l - max) (mtp; [2, 1]
    # otherwise)
    m_stat: torch.Tensor = None  # type: ignore[assignment]
    # (not a field) state[MODE] as start_sequence / start_fill wrote it, so that a launch checks
    # it without reading the device; None: unknown (read it)
    mode = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def clone(self) -> Buffers:
        return Buffers(**{k: v.clone() for k, v in self.tensors().items()})


def alloc_buffers(plan: Plan, device: torch.device | str, dtype: torch.dtype,
                  k_cache: torch.Tensor, v_cache: torch.Tensor, pin: bool = False,
                  hidden: torch.Tensor | None = None) -> Buffers:
    """`hidden`: the KV cache's hidden states ([capacity, H], KVCache.hidden), for sequences
    started with keep_hidden; None: a placeholder (never written)."""
    c, T = plan.cfg, plan.T
    assert hidden is None or tuple(hidden.shape) == (k_cache.shape[2], c.hidden_size), (
        "hidden states: one row per KV position")
    f32, i32 = torch.float32, torch.int32

    def z(*shape, dt=f32):
        return torch.zeros(shape, dtype=dt, device=device)

    host = torch.zeros(HOST_HDR + plan.max_len, dtype=i32, pin_memory=pin)
    if not pin:
        host = host.to(device)
    nt = plan.n_lm_tiles
    m = int(plan.mtp)
    if m:
        assert k_cache.shape[0] == c.num_layers + 1, "an MTP plan: the KV cache has L + 1 layers"
        assert hidden is not None, "an MTP plan reads the kept hidden states"
    return Buffers(
        x=z(T * (1 + m), c.hidden_size, dt=dtype), qkv=z(T, c.q_size + 2 * c.kv_size),
        qkv_ll=z(T, c.q_size + 2 * c.kv_size, dt=torch.int64),
        att_acc=z(c.num_heads, plan.splits, T, c.head_dim),
        att_ml=z(2, c.num_heads, plan.splits, T), attn=z(T, c.q_size, dt=dtype),
        part=z(T, c.hidden_size), act=z(T, c.intermediate_size, dt=dtype),
        logits=z(T + m, c.vocab_size), lm_val=z(T + m, nt), lm_idx=z(T + m, nt, dt=i32),
        lm_stat=z(2, T, nt), cand=z(T, max(1, plan.n_cand_lists), plan.tiling.cand,
                                    dt=torch.int64),
        tokens=z(T, dt=i32), state=z(STATE_SIZE, dt=i32), fparams=z(2),
        stop_ids=z(1, dt=i32), drafts=z(plan.max_len, dt=i32),
        hist=z(k_cache.shape[2], dt=i32), host=host,
        ctr=z(plan.n_counters, dt=i32), err=z(ERR_SIZE, dt=i32), k_cache=k_cache, v_cache=v_cache,
        hidden=z(1, c.hidden_size, dt=dtype) if hidden is None else hidden,
        m_stat=z(2, nt if m else 1), **no_tables(device))


C_TABLES = ("bitmask", "default", "exc_ptr", "exc_tokens", "exc_next", "done", "forced")
_NO_TABLES: dict[str, dict[str, torch.Tensor]] = {}


def no_tables(device: torch.device | str) -> dict[str, torch.Tensor]:
    """The placeholder tables of an unconstrained sequence (one set per device, never read)."""
    key = str(torch.device(device))
    if key not in _NO_TABLES:
        i32 = dict(dtype=torch.int32, device=device)
        _NO_TABLES[key] = dict(
            c_bitmask=torch.zeros(1, 1, **i32), c_default=torch.full((1,), -1, **i32),
            c_exc_ptr=torch.zeros(2, **i32), c_exc_tokens=torch.zeros(1, **i32),
            c_exc_next=torch.full((1,), -1, **i32),
            c_done=torch.zeros(1, dtype=torch.bool, device=device),
            c_forced=torch.full((1,), -1, **i32))
    return _NO_TABLES[key]


def constraint_states(automaton, state: int, tokens: list[int]) -> list[int]:
    """Automaton states before each position of a step whose input tokens are `tokens`:
    `state` (after tokens[0]), then after each draft in turn (-1 from the first one the
    constraint does not allow: that position can never be accepted)."""
    out = [state]
    for t in tokens[1:]:
        s = out[-1]
        out.append(automaton.next(s, t) if s >= 0 else -1)
    return out


def _write_inputs(bufs: Buffers, w: MonoWeights, toks: list[int]) -> None:
    """A step's input tokens (the first len(toks) positions) and x, their embedding rows (one
    copy to the device and one gather there: each tensor op costs the host 20-40 us on CUDA)."""
    n = len(toks)
    ids = bufs.tokens[:n]
    ids.copy_(torch.tensor(toks, dtype=torch.int32))
    torch.index_select(w.embed, 0, ids, out=bufs.x[:n])


def set_step_inputs(bufs: Buffers, w: MonoWeights, T: int, drafts: list[int],
                    automaton=None, guessed: int | None = None,
                    switch: bool = False, narrow: bool = False,
                    conf: int | None = None, last: int | None = None,
                    rule: tuple[int, int] | None = None) -> list[int]:
    """Before a launch of a T-position kernel on running buffers (speculative decoding with a
    host drafter, one verification step per launch; the first step of a launch of the device
    drafter): the step's inputs become the last emitted token (tokens[0], as the previous
    step's SAMPLE left it), then `drafts`, then that token again as padding (a padded position
    is verified like a draft: kept only when it is the token chosen there); x their embedding
    rows; with a constraint, the automaton state before each position (from state[C_STATE],
    the state after tokens[0]). `guessed`: how many of `drafts` are the drafter's (the device
    drafter's counts, state[D_GUESSED]). `switch` (start_drafting(switch=True)): without
    drafts the step runs as one position (STEP_ONE), with them at T positions, or narrow with
    `narrow` (start_drafting(narrow=)); `conf` (the lookup's confidence, weights.D_CONF; None:
    the rule by match lengths left out) below D_MATCH_MIN: one position; at D_MATCH_WIDE or
    more: all T positions. `last` (the host knows it): tokens[0], `rule`: (D_MATCH_MIN,
    D_MATCH_WIDE) as start_drafting set them; read from the device when None. Returns the
    step's input tokens."""
    assert len(drafts) <= T - 1 <= bufs.tokens.shape[0] - 1, "drafts past the step's positions"
    if last is None:
        last = int(bufs.tokens[0])
    toks = [last] + list(drafts) + [last] * (T - 1 - len(drafts))
    _write_inputs(bufs, w, toks)
    if automaton is not None:
        cs = int(bufs.state[C_STATE])
        bufs.state[C_STATE:C_STATE + T] = torch.tensor(constraint_states(automaton, cs, toks),
                                                       dtype=torch.int32)
    if guessed is not None:
        bufs.state[D_GUESSED] = guessed
    if switch:
        weak, wide = False, False
        if conf is not None:
            weak, wide = match_rule(bufs.state, len(drafts),
                                    len(drafts) if guessed is None else guessed, conf, rule)
        bufs.state[STEP_ONE] = 1 if not drafts or weak else 2 if narrow and not wide else 0
    return toks


def match_rule(st: torch.Tensor, nd: int, guessed: int, conf: int,
               rule: tuple[int, int] | None = None) -> tuple[bool, bool]:
    """ops_sample.sample_run's width rule by the lookup's match (conf: D_CONF) for a step of
    nd drafts, `guessed` of them the lookup's: (weak: all are its guesses and the match is
    shorter than D_MATCH_MIN, so the step runs as one position (forced drafts are sure);
    wide: the match reaches D_MATCH_WIDE). `rule`: those two slots' values (None: read)."""
    match_min, match_wide = rule or st[D_MATCH_MIN:D_MATCH_WIDE + 1].tolist()  # (one read)
    return conf < match_min and guessed >= nd, 0 < match_wide <= conf


def q16(v: float) -> int:
    """A real number as the state's Q16 fixed point (int32, saturated)."""
    return max(-(1 << 31), min((1 << 31) - 1, round(v * Q16)))


def start_drafting(bufs: Buffers, history: list[int], *, min_ngram: int, max_ngram: int, k: int,
                   accepted: float = 0.0, alpha: float = 0.15, floor: float | None = None,
                   probe: bool = False, switch: bool = False, probe_every: int = 8,
                   max_probe_every: int = 64, narrow: int = 0, need: int = 0,
                   match_min: int = 0, match_wide: int = 0) -> tuple[int, int]:
    """After start_sequence: the device n-gram drafter runs on these buffers. `history`: the
    sequence so far (prompt and emitted tokens, the last one the input of the next step) goes
    to `hist`; SAMPLE appends every token it emits; a kernel of T > 1 positions drafts up to
    min(k, T - 1) tokens after each step by NgramDrafter's rule (min_ngram..max_ngram), trimmed
    as the host's propose_drafts trims, so only its first step's drafts come from the host
    (set_step_inputs, with `guessed`). `accepted`: the starting mean of accepted tokens per
    step, `alpha` its weight per step; a step whose mean falls below `floor` (None: never) ends
    the launch with DONE_PAUSE; `probe`: the first step's count replaces the mean; `switch`: a
    step with no drafts runs as a T = 1 step of the same kernel (STEP_ONE), not at T positions
    (one launch for the whole sequence: below `floor` no pause, one-position steps instead,
    with a probe after `probe_every` of them, the wait doubling to `max_probe_every` after each
    probe that does not pay). `narrow` (switching, a kernel built with Tiling.narrow of that
    many positions): the steps with drafts run narrow, and at T positions after a narrow or
    wide step that kept `need` drafts (default narrow - 1: all of a narrow step's; more than
    T - 1: never), or where the lookup's match (D_CONF) reaches `match_wide` (0: not by it);
    `match_min` (switching): a step whose drafts rest on a shorter match runs as one position.
    Returns (state[D_MATCH_MIN], state[D_MATCH_WIDE]) as written: set_step_inputs' `rule`."""
    n = len(history)
    assert narrow == 0 or (switch and narrow >= 2), "narrow steps: switching, >= 2 positions"
    assert 1 <= n <= bufs.hist.numel(), f"a history of {n} tokens in {bufs.hist.numel()}"
    assert 1 <= min_ngram <= max_ngram and k >= 0, (min_ngram, max_ngram, k)
    assert match_min >= 0 and match_wide >= 0, (match_min, match_wide)
    assert switch or not match_min, "match_min: switching only (match_wide: with narrow steps)"
    bufs.hist[:n].copy_(torch.tensor(history, dtype=torch.int32))
    vals = {D_ON: 1, N_HIST: n, HIST_CAP: bufs.hist.numel(), D_NMIN: min_ngram,
            D_NMAX: max_ngram, D_K: k, D_GUESSED: 0, D_EWMA: q16(max(accepted, 0.0)),
            D_ALPHA: q16(alpha), D_FLOOR: -1 if floor is None else max(q16(floor), 0),
            D_PROBE: int(probe), D_STEPS: 0, D_DRAFTED: 0, D_ACCEPTED: 0,
            D_SWITCH: int(switch), STEP_ONE: 0, D_WAIT: 0, D_EVERY: probe_every,
            D_EVERY0: probe_every, D_EVERY_MAX: max(probe_every, max_probe_every),
            D_WIDE: int(narrow > 0), D_NEED: need or max(narrow - 1, 1), D_CONF: 0,
            D_MATCH_MIN: match_min, D_MATCH_WIDE: match_wide if narrow else 0,
            D_BY_WIDTH: 0, D_BY_WIDTH + 1: 0, D_BY_WIDTH + 2: 0}
    # every slot from D_ON to D_BY_WIDTH + 2 (46 is unused): one copy to the device
    assert sorted(vals) == [i for i in range(D_ON, D_BY_WIDTH + 3) if i != 46]
    vals[46] = 0
    bufs.state[D_ON:D_BY_WIDTH + 3].copy_(
        torch.tensor([vals[i] for i in range(D_ON, D_BY_WIDTH + 3)], dtype=torch.int32))
    return vals[D_MATCH_MIN], vals[D_MATCH_WIDE]


def start_mtp(bufs: Buffers, floor: float = 0.0, lazy: bool = True) -> None:
    """After start_drafting (switching, narrow steps) on the buffers of a plan with mtp=True:
    the MTP module's draft is the lookup's fallback, used where its probability is at least
    `floor` (0..1); its K/V covers the positions before state[POS] (a fill wrote them).
    `lazy` (M_LAZY): its ops run only on steps whose next one may use its draft. Needs the
    hidden states kept (start_sequence(keep_hidden=True)) and no constraint."""
    st = bufs.state.tolist()  # (one read of the device state, one write below)
    assert st[D_ON] and st[D_SWITCH] and st[D_WIDE], (
        "the MTP fallback runs with the device drafter's switching narrow steps")
    assert st[KEEP_HIDDEN], "the MTP module reads the kept hidden states"
    assert not st[C_ON], "no MTP fallback under a constraint"
    assert 0.0 <= floor <= 1.0, f"an MTP floor of {floor}"
    bufs.state[M_ON:M_ACCEPTED + 1] = torch.tensor([1, q16(floor), 0, 0, 0], dtype=torch.int32)
    bufs.state[M_KV:M_LAZY + 1] = torch.tensor([st[POS], 0, 0, int(lazy)], dtype=torch.int32)


def start_fill(bufs: Buffers, tokens: list[int], start: int, end: int) -> int:
    """Buffers of a fill plan (plan(fill=True)) set up to compute the MTP module's K/V of
    positions [start, end) (into the cache these buffers hold, layer L) from the kept hidden
    states there and `tokens` (the sequence by position, at least end + 1 of them: position j
    needs the token after it). Returns the steps to launch (T positions each; 0: nothing)."""
    T = bufs.tokens.shape[0]
    assert start >= 0 and len(tokens) > end and end + T <= bufs.hist.numel(), (
        start, end, len(tokens), bufs.hist.numel())
    if end <= start:
        return 0
    n = end + 1
    bufs.hist[:n] = torch.tensor(tokens[:n], dtype=torch.int32).to(bufs.hist.device)
    st = [0] * STATE_SIZE
    st[POS], st[N_HIST], st[M_FILL], st[FILL_END] = start, n, 1, end
    bufs.state.copy_(torch.tensor(st, dtype=torch.int32))
    bufs.mode = GREEDY
    return -(-(end - start) // T)


_STOP_IDS: dict[tuple, torch.Tensor] = {}


def _stop_tensor(stop_ids: list[int], device) -> torch.Tensor:
    """The stop ids as a device tensor ([-1] for none), made once per set and device (a copy to
    the device per sequence otherwise; the kernel only reads it)."""
    key = (str(torch.device(device)), tuple(stop_ids or [-1]))
    t = _STOP_IDS.get(key)
    if t is None:
        if len(_STOP_IDS) >= 64:
            _STOP_IDS.clear()
        t = _STOP_IDS[key] = torch.tensor(key[1], dtype=torch.int32, device=device)
    return t


def start_sequence(bufs: Buffers, w: MonoWeights, *, token: int, pos: int, max_new: int,
                   stop_ids: list[int], capacity: int, mode: int = GREEDY,
                   temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                   drafts: list[int] | None = None, automaton=None, cstate: int = 0,
                   restart: bool = False, keep_hidden: bool = False) -> None:
    """Host-side setup before the first launch: `token` (output index 0, already sampled from
    the prefill logits) sits at position `pos`; drafts[i] proposes output index i.
    `automaton` (a constraints.TokenAutomaton with its tables on the buffers' device): the
    kernel masks every position by it and advances it past each token; `cstate` is its state
    after `token`. `restart` (timing only): a state that allows only EOS restarts at the
    automaton's start state instead of ending the sequence. `keep_hidden`: every step writes
    the final hidden states of the positions it keeps to `bufs.hidden` (state[KEEP_HIDDEN])."""
    dev, T = bufs.state.device, bufs.tokens.shape[0]
    drafts = list(drafts or [])
    assert len(drafts) <= bufs.drafts.numel(), "more drafts than the draft buffer holds"
    bufs.drafts.zero_()
    if drafts:
        bufs.drafts[: len(drafts)] = torch.tensor(drafts, dtype=torch.int32, device=dev)
    bufs.stop_ids = _stop_tensor(stop_ids, dev)
    # position j proposes output index j (the kernel's SAMPLE reads drafts[n_out - 1 + j] for
    # the later steps; here n_out = 1)
    toks = [token] + [drafts[i] if i < len(drafts) else token for i in range(1, T)]
    _write_inputs(bufs, w, toks)
    st = [0] * STATE_SIZE
    st[POS], st[N_OUT], st[MODE], st[TOP_K], st[MAX_NEW] = pos, 1, mode, top_k, max_new
    st[N_STOP], st[N_DRAFT], st[CAPACITY] = len(stop_ids), len(drafts), capacity
    st[SEED_LO], st[SEED_HI] = seed & 0xFFFFFFFF, (seed >> 32) & 0x7FFFFFFF
    st[SEED_LO] -= (1 << 32) if st[SEED_LO] >= 1 << 31 else 0  # as int32
    if keep_hidden:
        assert bufs.hidden.shape[0] >= capacity, "hidden states need a row per KV position"
        st[KEEP_HIDDEN] = 1
    if automaton is not None:
        assert automaton.bitmask.device == dev, "the automaton's tables on another device"
        assert cstate >= 0, "a constrained sequence starts in a live state"
        for k in C_TABLES:
            setattr(bufs, f"c_{k}", getattr(automaton, k))
        st[C_ON], st[C_WORDS], st[C_EOS] = 1, automaton.bitmask.shape[1], automaton.eos_ids[0]
        st[C_START] = automaton.state0 if restart else -1
        st[C_STATE:C_STATE + T] = constraint_states(automaton, cstate, toks)
    else:
        for k, v in no_tables(dev).items():
            setattr(bufs, k, v)
    bufs.state.copy_(torch.tensor(st, dtype=torch.int32))
    bufs.fparams.copy_(torch.tensor([temperature, top_p], dtype=torch.float32))
    bufs.host.zero_()
    bufs.host[HOST_HDR] = token
    bufs.host[H_PROGRESS] = 1
    bufs.err.zero_()  # (the counters: zeroed by every launch)
    bufs.mode = mode
