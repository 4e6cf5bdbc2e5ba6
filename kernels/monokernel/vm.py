"""The VM: executes a Plan with torch ops, instruction by instruction, on CPU or CUDA.

The oracle for every buffer the kernel writes: same instructions, same tiles, same buffers
(x, qkv, attention partials, attn, act, logits, per-tile LM-head partials, candidates, token
ring, the device drafter's history, drafts and counts, the kept hidden states, counters, an MTP
module's rows of x, K/V, head partials and draft), fp32 math where the kernel accumulates in
fp32. A step of a T > 1 plan with state[STEP_ONE] 1 runs one position, as the kernel's T = 1
paths do, with 2 the plan's narrow positions (per-step switching, Tiling.narrow). Ops run in
plan order, each over all programs' runs (any interleaving the counters allow gives the same
buffers). With several ranks (each its own Buffers, KV cache included) ALLREDUCE sums the
ranks' partials.
Knows nothing about Triton; sampling rules live in sampling.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import plan as P
from . import weights as W
from .sampling import (
    MIN_KEY,
    candidate_keys,
    choose_filtered,
    constraint_next,
    device_drafts,
    gumbel,
    mask_rows,
)

LOG2E = 1.4426950408889634


def _rot(t: torch.Tensor) -> torch.Tensor:
    h = t.shape[-1] // 2
    return torch.cat([-t[..., h:], t[..., :h]], dim=-1)


def seed_of(st: torch.Tensor) -> int:
    return (int(st[W.SEED_LO]) & 0xFFFFFFFF) | (int(st[W.SEED_HI]) << 32)


def live_range(pos: int, T: int, window: int | None, splits: int, block: int):
    """(lo, n, chunk): keys [lo, n) cut into `splits` chunks of whole blocks."""
    n = pos + T
    lo = max(0, pos - window + 1) if window else 0
    chunk = math.ceil(math.ceil((n - lo) / splits) / block) * block
    return lo, n, chunk


class VM:
    def __init__(self, plan: P.Plan, w: W.MonoWeights, bufs: list[W.Buffers]):
        assert len(bufs) == plan.ranks, f"{plan.ranks} ranks need as many Buffers"
        self.plan, self.w, self.bufs, self.cfg = plan, w, bufs, plan.cfg
        self._tickets: dict[tuple, int] = {}  # (buffers, layer, kv head) -> splits done
        self.code, self.t = 0, plan.T  # this step: its width code (STEP_ONE), its positions
        self.by_seq = [[[] for _ in plan.ops] for _ in range(plan.ranks)]
        for r in range(plan.ranks):
            for ins in plan.instructions(r):
                self.by_seq[r][ins.seq].append(ins)

    def _positions(self, code: int) -> int:
        """The positions of a step of width code `code` (STEP_ONE: 0 T, 1 one, 2 narrow)."""
        return {1: 1, 2: self.plan.tiling.narrow}.get(code, self.plan.T)

    @property
    def one(self) -> bool:
        """This step runs one position (the T = 1 kernel's splits and blocks)."""
        return self.code == 1

    @property
    def merging(self) -> bool:
        """OPROJ_M merges the attention splits in this step (Plan.merges: a T = 1 plan's steps,
        a T > 1 plan's one-position steps, with Plan.narrow_merge its narrow ones); O-proj's
        sum then waits in `part`."""
        return self.plan.merges(self.code)

    def _splits_block(self) -> tuple[int, int]:
        """This step's KV splits and keys per block: a one-position step's (the T = 1 kernel's,
        kernel.py BT1), else the plan's splits of a T-position step (Plan.split_ratio)."""
        pl = self.plan
        if self.one:
            return pl.splits, pl.block_one
        return pl.splits // pl.split_ratio, pl.tiling.attn_block

    def run(self, nsteps: int, stop_after: int | None = None,
            stop_after_layer: int | None = None) -> int:
        """Up to `nsteps` steps (fewer when the sequence ends); with `stop_after` (an op
        number) or `stop_after_layer`, each step ends there. Returns the steps run; the
        buffers are updated in place (`buffers()`)."""
        if stop_after_layer is not None:
            stop_after = self.plan.last_seq_of_layer(stop_after_layer)
        last = self.plan.last_seq if stop_after is None else min(stop_after, self.plan.last_seq)
        for b in self.bufs:  # as the kernel's launch does: epochs restart at 1
            b.ctr.zero_()
            if self.plan.oproj_merge:
                b.part.zero_()
        for step in range(nsteps):
            if int(self.bufs[0].state[W.DONE]):
                return step
            # a T > 1 plan's step of one position, or narrow (state[STEP_ONE]: 1, 2)
            self.code = int(self.bufs[0].state[W.STEP_ONE]) if self.plan.T > 1 else 0
            self.t = self._positions(self.code)
            self.pos0 = int(self.bufs[0].state[W.POS])  # (SAMPLE advances it; the MTP ops
            # after it run at the step's positions)
            for op in self.plan.ops[: last + 1]:
                run = True
                if self.plan.mtp and not self.plan.fill and op.layer == self.cfg.num_layers:
                    run = self._module_positions()  # (SAMPLE chose them)
                for r, b in enumerate(self.bufs):
                    for ins in self.by_seq[r][op.seq]:
                        if run:
                            getattr(self, P.OP_NAMES[ins.opcode].lower())(ins, b, step)
                        b.ctr[ins.seq] += ins.signal
        return nsteps

    def _module_positions(self) -> bool:
        """A decode step's MTP module ops run over positions [M_POS, M_POS + M_W), on the
        code paths of that width (kernel.py: its rows past M_W padding, as a step's rows past
        those it keeps); M_W 0: they skip (False)."""
        st = self.bufs[0].state
        mw = int(st[W.M_W])
        self.pos0 = int(st[W.M_POS])
        self.code = 1 if mw <= 1 else (2 if mw <= self.plan.tiling.narrow else 0)
        self.t = self._positions(self.code)
        return mw > 0

    def buffers(self, rank: int = 0) -> dict[str, torch.Tensor]:
        return self.bufs[rank].tensors()

    # ---- ops: (instruction, this rank's buffers, step) --------------------------------------

    def _normed(self, x: torch.Tensor, nw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = x.float()  # [T, H]
        return xf * nw.float(), torch.rsqrt(xf.pow(2).mean(-1) + self.cfg.rms_norm_eps)

    def _x(self, b, ins) -> torch.Tensor:
        """The rows of x an op of layer ins.layer reads and writes: the step's positions, or
        the MTP module's own rows (its layer, plan.mtp)."""
        T0 = self.plan.T if ins.layer == self.cfg.num_layers else 0
        return b.x[T0:T0 + self.t]

    def qkv(self, ins, b, step):
        w, rows = self.w, slice(ins.start, ins.end)
        xn, rstd = self._normed(self._x(b, ins), w.attn_norm[ins.layer])
        y = xn @ w.w_qkv[ins.layer, rows].float().T * rstd[:, None]  # [T, rows]
        if w.b_qkv is not None:
            y = y + w.b_qkv[ins.layer, rows]
        b.qkv[:self.t, rows] = y

    def attn(self, ins, b, step):
        c, w, pl, li = self.cfg, self.w, self.plan, ins.layer
        T, G, hd, S = self.t, c.group_size, c.head_dim, pl.splits
        splits, block = self._splits_block()
        pos = self.pos0
        lo, n, chunk = live_range(pos, T, c.sliding_window, splits, block)
        qpos = torch.arange(pos, pos + T, device=b.x.device)
        cos, sin = w.cos[pos:pos + T], w.sin[pos:pos + T]  # [T, hd]
        live = math.ceil((n - lo) / chunk)
        for tile in range(ins.start, ins.end):
            kvh, split = divmod(tile, S)
            if split >= splits:  # past the step's splits (Plan.split_ratio)
                continue
            s0 = lo + split * chunk
            s1 = min(s0 + chunk, n)
            if s0 >= s1:
                continue
            heads = slice(kvh * G, (kvh + 1) * G)
            q = b.qkv[:T, kvh * G * hd:(kvh + 1) * G * hd].view(T, G, hd)
            k = b.qkv[:T, c.q_size + kvh * hd:c.q_size + (kvh + 1) * hd]  # [T, hd]
            v = b.qkv[:T, c.q_size + c.kv_size + kvh * hd:c.q_size + c.kv_size + (kvh + 1) * hd]
            if w.q_norm is not None:
                q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps) * w.q_norm[li]
                k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps) * w.k_norm[li]
            q = (q * cos[:, None] + _rot(q) * sin[:, None]) * (LOG2E / math.sqrt(hd))
            k = k * cos + _rot(k) * sin
            for j in range(T):  # K/V append: the new positions inside this split's chunk
                if s0 <= pos + j < s1:
                    b.k_cache[li, kvh, pos + j] = k[j].to(b.k_cache.dtype)
                    b.v_cache[li, kvh, pos + j] = v[j].to(b.v_cache.dtype)
            keys = b.k_cache[li, kvh, s0:s1].float()  # [nk, hd]
            vals = b.v_cache[li, kvh, s0:s1].float()
            s = torch.einsum("tgd,kd->tgk", q, keys)  # [T, G, nk]
            kp = torch.arange(s0, s1, device=s.device)
            ok = kp[None, :] <= qpos[:, None]  # [T, nk]
            if c.sliding_window:
                ok &= kp[None, :] > qpos[:, None] - c.sliding_window
            s = s.masked_fill(~ok[:, None, :], float("-inf"))
            m = s.amax(-1)  # [T, G]
            p = torch.exp2(s - torch.where(m == float("-inf"), 0.0, m)[..., None])
            b.att_acc[heads, split, :T] = (p @ vals).transpose(0, 1)  # [G, T, hd]
            b.att_ml[0, heads, split, :T] = m.T
            b.att_ml[1, heads, split, :T] = p.sum(-1).T
            if self.merging:  # OPROJ_M merges the partials
                continue
            # the kernel's ticket: the last live split of the kv head merges its heads
            key = (id(b), li, kvh)
            self._tickets[key] = self._tickets.get(key, 0) + 1
            if self._tickets[key] == live:
                del self._tickets[key]
                self._merge(b, range(kvh * G, (kvh + 1) * G), live)

    def _merge(self, b, heads, live: int):
        c, t = self.cfg, self.t
        for h in heads:
            m, l_ = b.att_ml[0, h, :live, :t], b.att_ml[1, h, :live, :t]  # [live, T]
            wgt = torch.exp2(m - m.amax(0))
            out = (b.att_acc[h, :live, :t] * wgt[..., None]).sum(0) / (l_ * wgt).sum(0)[:, None]
            b.attn[:t, h * c.head_dim:(h + 1) * c.head_dim] = out.to(b.attn.dtype)

    def _project(self, ins, b, wt, src, bias):
        rows, cols = slice(ins.start, ins.end), slice(ins.k0, ins.k1)
        t = self.t
        y = src[:t, cols].float() @ wt[rows, cols].float().T  # [T, rows]
        if ins.partial:
            b.part[:t, rows] = y
            return
        if bias is not None:
            y = y + bias[rows]
        x = self._x(b, ins)
        res = x[:, rows].float()
        if self.merging:  # (DOWN) O-proj's sum joins the residual, part is reset
            res = (res + b.part[:t, rows]).to(b.x.dtype).float()
            b.part[:t, rows] = 0.0
        x[:, rows] = (y + res).to(b.x.dtype)

    def oproj(self, ins, b, step):
        if self.merging:  # OPROJ_M ran instead
            return
        bo = None if self.w.b_o is None else self.w.b_o[ins.layer]
        self._project(ins, b, self.w.w_o[ins.layer], b.attn, bo)

    def oproj_m(self, ins, b, step):
        """(kv head k, rows) tiles, rows numbered k * H + row: merge the group's partials,
        W[rows, k's columns] @ them (+ bias at k = 0) summed into part[:t]; in the steps
        where it does not merge (Plan.merges: a T > 1 plan's wide steps, its narrow ones
        without narrow_merge), nothing (OPROJ runs)."""
        if not self.merging:
            return
        bo = None if self.w.b_o is None else self.w.b_o[ins.layer]
        c = self.cfg
        G, H = c.group_size, c.hidden_size
        kvh = ins.start // H
        rows = slice(ins.start - kvh * H, ins.end - kvh * H)
        t = self.t
        lo, n, chunk = live_range(self.pos0, t, c.sliding_window, *self._splits_block())
        self._merge(b, range(kvh * G, (kvh + 1) * G), math.ceil((n - lo) / chunk))
        cols = slice(ins.k0, ins.k1)
        y = b.attn[:t, cols].float() @ self.w.w_o[ins.layer][rows, cols].float().T
        if bo is not None and kvh == 0:
            y = y + bo[rows]
        b.part[:t, rows] += y

    def down(self, ins, b, step):
        self._project(ins, b, self.w.w_down[ins.layer], b.act, None)

    def allreduce(self, ins, b, step):
        if b is not self.bufs[-1]:
            return  # done once, for every rank, when the last rank reaches it
        tot = sum(r.part.float() for r in self.bufs)
        if ins.bias and self.w.b_o is not None:
            tot = tot + self.w.b_o[ins.layer]
        for r in self.bufs:
            r.x.copy_((tot + r.x.float()).to(r.x.dtype))

    def gateup(self, ins, b, step):
        w, rows, inter = self.w, slice(ins.start, ins.end), self.cfg.intermediate_size
        x = self._x(b, ins)
        if self.merging:  # O-proj's sum waits in part
            x = (x.float() + b.part[:self.t]).to(b.x.dtype)
        xn, rstd = self._normed(x, w.mlp_norm[ins.layer])
        g = xn @ w.w_gu[ins.layer, rows].float().T * rstd[:, None]
        u = xn @ w.w_gu[ins.layer, ins.start + inter:ins.end + inter].float().T * rstd[:, None]
        b.act[:self.t, rows] = (F.silu(g) * u).to(b.act.dtype)

    def mtp_eh(self, ins, b, step):
        """x[T + t, rows] = W_eh[rows] @ [enorm(embed(token after t)); hnorm(hidden[pos + t])]:
        the tokens after the step's positions are the last `emitted` ones of the history (the
        kept drafts and the new token); past them zeros stand in (rows never kept). In a fill
        (state[M_FILL]) the rows are T positions of a prompt, `hist` its tokens by position,
        those up to FILL_END kept."""
        w, st, t, T = self.w, b.state, self.t, self.plan.T
        nh = int(st[W.N_HIST])
        if int(st[W.M_FILL]):  # a fill: T positions of the prompt, tokens by position
            e = min(T, int(st[W.FILL_END]) - self.pos0)
            idx = [self.pos0 + 1 + r for r in range(t)]
        else:
            e = int(st[W.POS]) - self.pos0  # emitted this step
            idx = [nh - e + r for r in range(t)]
        toks = [int(b.hist[i]) if 0 <= i < nh else 0 for i in idx]
        emb = w.embed[torch.tensor(toks, device=w.embed.device)].float()
        hid = b.hidden[self.pos0:self.pos0 + t].float().clone()
        hid[max(0, e):] = 0.0  # the rows SAMPLE did not keep
        ev, er = self._normed(emb, w.enorm)
        hv, hr = self._normed(hid, w.hnorm)
        inp = torch.cat([ev * er[:, None], hv * hr[:, None]], -1)  # [t, 2H]
        rows = slice(ins.start, ins.end)
        y = inp @ w.w_eh[rows].float().T
        b.x[T:T + t, rows] = y.to(b.x.dtype)

    def _mtp_head(self, ins, b):
        """The MTP module's head: logits of its row at the last kept position (row T of
        logits / lm_val / lm_idx), per-tile max and sum of exp(l - max) in m_stat; only where
        MTP_SAMPLE may use the draft."""
        w, pl, T, st = self.w, self.plan, self.plan.T, b.state
        if not (int(st[W.M_ON]) and not int(st[W.DONE]) and int(st[W.STEP_ONE]) == 1):
            return  # MTP_SAMPLE would not use the draft: skipped
        bn, n0, n1 = pl.bn_lm, ins.start, ins.end
        e = max(1, int(b.state[W.POS]) - self.pos0)
        x = b.x[T + e - 1:T + e]
        xn, rstd = self._normed(x, w.mtp_norm)
        lg = (xn @ w.lm_head[n0:n1].float().T * rstd[:, None])[0]  # [n]
        b.logits[T, n0:n1] = lg
        nt = math.ceil((n1 - n0) / bn)
        tiles = slice(n0 // bn, n0 // bn + nt)
        pad = F.pad(lg, (0, nt * bn - (n1 - n0)), value=float("-inf")).view(nt, bn)
        mx = pad.amax(-1)
        b.m_stat[0, tiles] = mx
        b.m_stat[1, tiles] = torch.exp(pad - mx[:, None]).sum(-1)
        b.lm_val[T, tiles] = mx
        b.lm_idx[T, tiles] = (pad.argmax(-1) + torch.arange(nt, device=lg.device) * bn
                              + n0).to(torch.int32)

    def fill_next(self, ins, b, step):
        """A fill's step end: the next T positions; past FILL_END the launch ends."""
        st = b.state
        st[W.POS] = self.pos0 + self.plan.T
        st[W.STEPS] += 1
        if int(st[W.POS]) >= int(st[W.FILL_END]):
            st[W.DONE] = 1

    def mtp_sample(self, ins, b, step):
        """ops_sample.mtp_sample_run: where SAMPLE left the next step one position and the
        module's draft is likely enough (M_FLOOR), the next step runs narrow with it."""
        st, T, TB = b.state, self.plan.T, self.plan.tiling.narrow
        if (TB < 2 or not int(st[W.M_ON]) or int(st[W.DONE]) or int(st[W.STEP_ONE]) != 1):
            return
        mx, se = b.m_stat[0], b.m_stat[1]
        z = float((se * torch.exp(mx - mx.max())).sum())
        if (1.0 / z) * W.Q16 < int(st[W.M_FLOOR]):
            return
        d = int(b.lm_idx[T, int(torch.argmax(b.lm_val[T]))])
        last = int(b.tokens[0])
        b.tokens[1] = d
        b.tokens[2:TB] = last
        b.x[1] = self.w.embed[d]
        b.x[2:TB] = self.w.embed[last]
        st[W.STEP_ONE], st[W.M_USED] = 2, 1

    def lmhead(self, ins, b, step):
        if ins.layer >= 0:
            return self._mtp_head(ins, b)
        w, pl, T = self.w, self.plan, self.t
        bn, n0, n1 = pl.bn_lm, ins.start, ins.end
        xn, rstd = self._normed(b.x[:T], w.norm)
        lg = xn @ w.lm_head[n0:n1].float().T * rstd[:, None]  # [T, n]
        st = b.state
        if int(st[W.C_ON]):  # a constraint: mask by each position's automaton state
            lg = mask_rows(lg, n0, st[W.C_STATE:W.C_STATE + T].tolist(), b.c_bitmask,
                           int(st[W.C_WORDS]))
        b.logits[:T, n0:n1] = lg
        mode, temp = int(st[W.MODE]), float(b.fparams[W.TEMP])
        nt = math.ceil((n1 - n0) / bn)
        tiles = slice(n0 // bn, n0 // bn + nt)
        pad = F.pad(lg, (0, nt * bn - (n1 - n0)), value=float("-inf")).view(T, nt, bn)
        val = pad
        if mode != W.GREEDY:
            sc = pad / temp
            mx = sc.amax(-1)  # [T, nt]
            b.lm_stat[0, :T, tiles] = mx
            base = torch.where(mx > float("-inf"), mx, 0.0)  # (-inf: nothing allowed)
            b.lm_stat[1, :T, tiles] = torch.exp(sc - base[..., None]).sum(-1)
            if mode == W.TEMPERATURE:
                ids = torch.arange(n0, n0 + nt * bn, device=lg.device)
                pos, seed = int(st[W.POS]), seed_of(st)
                g = torch.stack([gumbel(seed + pos + t, ids) for t in range(T)])
                val = sc + g.view(T, nt, bn)
        b.lm_val[:T, tiles] = val.amax(-1)
        b.lm_idx[:T, tiles] = (val.argmax(-1) + torch.arange(nt, device=lg.device)[None] * bn
                              + n0).to(torch.int32)
        if mode == W.FILTERED:
            cap = pl.tiling.cand
            keys = candidate_keys(lg, torch.arange(n0, n1, device=lg.device)[None].expand(T, -1))
            top = torch.sort(keys, dim=-1, descending=True).values[:, :cap]
            b.cand[:T, ins.slot] = F.pad(top, (0, cap - top.shape[1]), value=MIN_KEY)

    def _choose(self, b, t: int) -> tuple[int, bool]:
        st, pl = b.state, self.plan
        mode = int(st[W.MODE])
        if mode != W.FILTERED:
            i = int(torch.argmax(b.lm_val[t]))  # (all -inf, a constraint's dead state: BIG)
            return int(b.lm_idx[t, i]) if b.lm_val[t, i] > float("-inf") else 2**31 - 1, False
        keys = torch.sort(b.cand[t, : pl.n_cand_lists].flatten(), descending=True).values
        mx, se = b.lm_stat[0, t], b.lm_stat[1, t]
        z = float((se * torch.exp(mx - mx.max())).sum())
        return choose_filtered(keys[: pl.tiling.cand], z, self.cfg.vocab_size,
                               float(b.fparams[W.TEMP]), int(st[W.TOP_K]),
                               float(b.fparams[W.TOP_P]), seed_of(st) + int(st[W.POS]) + t)

    @staticmethod
    def _draft_count(st: torch.Tensor, emitted: int, done: int, width: int) -> int:
        """ops_sample.draft_count: counts, the Q16 mean of accepted tokens per step, pause."""
        g, acc = min(int(st[W.D_GUESSED]), width - 1), max(emitted - 1, 0)
        if g > 0:
            st[W.D_STEPS] += 1
            st[W.D_DRAFTED] += g
            st[W.D_ACCEPTED] += min(acc, g)
        x, ew = acc << 16, int(st[W.D_EWMA])
        ew = x if int(st[W.D_PROBE]) else ew + (((x - ew) * int(st[W.D_ALPHA])) >> 16)
        below, switch = ew < int(st[W.D_FLOOR]), int(st[W.D_SWITCH]) != 0
        if switch and int(st[W.D_PROBE]):  # a probe: the wait for the next doubles, or resets
            st[W.D_EVERY] = (min(2 * int(st[W.D_EVERY]), int(st[W.D_EVERY_MAX])) if below
                             else int(st[W.D_EVERY0]))
        st[W.D_EWMA], st[W.D_PROBE], st[W.D_GUESSED] = ew, 0, 0
        return W.DONE_PAUSE if done == 0 and below and not switch else done

    @staticmethod
    def _switch(st: torch.Tensor, nd: int, code: int, emitted: int) -> None:
        """ops_sample.sample_run's choice of the next step's width (D_SWITCH): one position
        when the lookup drafted nothing, or only its guesses on a match shorter than
        D_MATCH_MIN (D_CONF), or while the mean is below the floor until a probe; with D_WIDE
        a drafting step narrow, or all T after a step (code: this one's width code) that was
        not one position and kept D_NEED drafts, or at a D_CONF of D_MATCH_WIDE."""
        weak, by_match = W.match_rule(st, nd, int(st[W.D_GUESSED]), int(st[W.D_CONF]))
        if weak:
            nd = 0
        one = nd <= 0
        if int(st[W.D_EWMA]) < int(st[W.D_FLOOR]):
            wait = int(st[W.D_WAIT]) + 1
            probe = nd > 0 and wait >= int(st[W.D_EVERY])
            st[W.D_WAIT], st[W.D_PROBE] = 0 if probe else wait, int(probe)
            one = not probe
        else:
            st[W.D_WAIT] = 0
        nxt = int(one)
        if int(st[W.D_WIDE]) and not one:
            wide = code != 1 and emitted - 1 >= int(st[W.D_NEED]) or by_match
            nxt = 0 if wide else 2
        st[W.STEP_ONE] = nxt

    def sample(self, ins, b, step):
        st, T, host = b.state, self.plan.T, b.host
        pos, n_out = int(st[W.POS]), int(st[W.N_OUT])
        stops = set(b.stop_ids[: int(st[W.N_STOP])].tolist())
        toks = b.tokens.tolist()
        done, emitted, last = 0, 0, toks[0]
        con = int(st[W.C_ON])
        cs = int(st[W.C_STATE]) if con else 0  # automaton state before position t
        d_on, n_hist, h_cap = int(st[W.D_ON]), int(st[W.N_HIST]), int(st[W.HIST_CAP])
        for t in range(self.t):
            a, over = self._choose(b, t)
            ns, fin = cs, False
            if con and not over:
                ns = constraint_next(b, cs, a)
                fin = ns >= 0 and bool(b.c_done[ns])  # only EOS allowed next
                if fin and int(st[W.C_START]) >= 0:  # (timing: restart instead of ending)
                    ns, fin = int(st[W.C_START]), False
            if over:
                done = W.DONE_ERROR
                b.err[:3] = torch.tensor([W.ERR_CAP, -1, ins.seq])
                break
            if ns < 0:
                done = W.DONE_ERROR
                b.err[:5] = torch.tensor([W.ERR_DEAD, -1, ins.seq, a, cs])
                break
            host[W.HOST_HDR + n_out] = a
            if d_on and n_hist < h_cap:
                b.hist[n_hist] = a
            n_out, emitted, last, n_hist = n_out + 1, emitted + 1, a, n_hist + 1
            if a in stops:
                done = W.DONE_STOP
            elif fin:  # EOS, without a forward pass: the output is complete
                host[W.HOST_HDR + n_out] = int(st[W.C_EOS])
                n_out, done = n_out + 1, W.DONE_STOP
            elif n_out >= int(st[W.MAX_NEW]):
                done = W.DONE_LENGTH
            cs = ns
            if done or t + 1 >= self.t or toks[t + 1] != a:
                break
        npos = pos + emitted
        if not done and int(host[W.H_CANCEL]):
            done = W.DONE_CANCEL
        if not done and npos + T > int(st[W.CAPACITY]):
            done = W.DONE_CAPACITY
        if T > 1 and d_on:
            st[W.D_BY_WIDTH + self.code] += 1
            if int(st[W.M_USED]):  # the MTP module's draft: its own counts
                st[W.M_STEPS] += 1
                st[W.M_ACCEPTED] += min(max(emitted - 1, 0), 1)
                st[W.M_USED] = 0
            elif not self.one:
                done = self._draft_count(st, emitted, done, self.t)
        if int(st[W.KEEP_HIDDEN]):  # the kept positions' final hidden states (before the norm)
            b.hidden[pos:pos + emitted] = b.x[:emitted]
        host[W.H_PROGRESS] = n_out
        if done and done != W.DONE_PAUSE:
            host[W.H_DONE] = done
        st[W.POS], st[W.N_OUT], st[W.DONE] = npos, n_out, done
        st[W.STEPS] += 1
        if d_on:
            n_hist = min(n_hist, h_cap)
            st[W.N_HIST] = n_hist
            if T > 1 and not done:  # the next step's drafts (ops_sample.draft_next)
                k = min(int(st[W.D_K]), T - 1)
                drafts, guessed, st[W.D_CONF] = device_drafts(
                    b, b.hist[:n_hist].tolist(), k, int(st[W.D_NMIN]), int(st[W.D_NMAX]), cs,
                    stops, bool(con))
                if drafts:
                    b.drafts[n_out:n_out + len(drafts)] = torch.tensor(drafts, dtype=torch.int32)
                st[W.N_DRAFT], st[W.D_GUESSED] = n_out + len(drafts), guessed
                if int(st[W.D_SWITCH]):  # the next step at T positions, or one
                    self._switch(st, len(drafts), self.code, emitted)
        if T > 1 and int(st[W.M_ON]):  # the MTP module's positions after this step
            kv = int(st[W.M_KV])
            mrun = not done and (int(st[W.STEP_ONE]) == 1 or not int(st[W.M_LAZY]))
            mw = min(max(npos - kv, 1), T)
            st[W.M_W], st[W.M_POS] = mw if mrun else 0, npos - mw
            st[W.M_KV] = npos if mrun else kv
        nd = int(st[W.N_DRAFT])
        nxt = [last] + [int(b.drafts[n_out - 1 + i]) if n_out - 1 + i < nd else last
                        for i in range(1, T)]
        b.tokens.copy_(torch.tensor(nxt, dtype=torch.int32))
        if con:  # the next step's per-position states: walk its input tokens (drafts)
            for j in range(T):
                cs = cs if j == 0 else constraint_next(b, cs, nxt[j])
                st[W.C_STATE + j] = cs
        # the embedding rows the next step reads (its width: one position, narrow, all T)
        rows = self._positions(int(st[W.STEP_ONE])) if T > 1 else T
        b.x[:rows] = self.w.embed[torch.tensor(nxt[:rows], device=self.w.embed.device)]
