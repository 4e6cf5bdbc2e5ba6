"""The monokernel backend: decode runs inside one persistent kernel, many tokens per launch.

Prefill (and `logits`) run the reference transformer over the same weights (stacked copies the
reference layers point into) and the same KV cache, as the graph backend does. Decode chooses the
first token from the prefill logits on the device by the kernel's own rule, then launches the
kernel for the rest: it writes each token to a host-visible ring (pinned memory on CUDA) and
bumps a progress counter, so the host yields tokens while the kernel runs; closing the iterator
sets the cancel flag the kernel reads once per step, then waits for it to stop. CUDA; on CPU only
under TRITON_INTERPRET=1 (tests). Knows nothing about text, sessions or stop strings.

Constraints: the automaton's device tables (the graph backend's) go into the sequence's buffers;
the first token is chosen from the masked prefill logits and the automaton advanced past it on
the host, then the kernel masks, chooses, advances and ends the output on the device (a state
that allows only EOS writes an EOS id and stops), with no host round trip per token.

Speculative decoding: the n-gram drafter (NgramDrafter, `--drafter ngram`) runs on the device:
one launch of the T = k + 1 kernel (k <= 3, switch_t) drafts, verifies and emits the whole
output, each step at T positions when the lookup has drafts for it and as a one-position step
of the same kernel when not (`_speculate_device`; with switch_t = 0 the launch pauses itself
when drafting stops paying and the host probes again later). Other drafters propose on the host, one
verification step per launch (`_speculate`). The MTP drafter reads the main model's final hidden
states from the KV cache (KVCache.hidden): with `keep_hidden` set before new_cache, the prefill
writes the prompt's and every kernel step (T = 1 or T = k + 1) those of the positions whose K/V
it keeps (SAMPLE copies them from the residual stream, state[KEEP_HIDDEN]).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import RequestError
from ..model import KVCache, Transformer, build_weights
from ..sampling import SamplingParams
from . import TokenLogprob, token_logprob
from .drafting import draft_policy, propose_drafts
from .prefill import ReferencePrefill

POLL_S = 20e-6  # host sleep between reads of the progress counter
# T-step costs measured on an H200 (us per step relative to T = 1, ctx 1024,
# bench/results/monokernel-20261130-s13 run 5, `tune --tsteps 2,4,8,16`): the Qwen3-1.7B
# shape's for models of a GB of weights or more, SmolLM2-135M's below (its T = 1 step is
# latency-bound, so a wider step costs relatively more); drafting pays from about one accepted
# token per step (DraftPolicy.break_even); the CPU interpreter has none (flat)
H200_STEP_COSTS = {1: 1.0, 2: 1.25, 4: 1.51, 8: 1.71, 16: 2.07}
H200_STEP_COSTS_SMALL = {1: 1.0, 2: 1.20, 4: 1.46, 8: 2.11, 16: 2.26}


class MonokernelBackend(ReferencePrefill):
    name = "monokernel"
    runs_ahead = True  # one launch decodes many tokens into the host ring (_follow)
    supports_constraints = True  # masked and advanced inside the kernel
    # decode(logprobs=k): the kernel runs one step per launch and the host scores the logits
    # row the step's LM head wrote (no extra forward; unconstrained requests only: with a
    # constraint the kernel masks that row in place)
    supports_logprobs = True
    # decode(drafter=, history=): drafts verified by a kernel of T = k_max + 1 positions: the
    # n-gram drafter's drafted on the device, many steps per launch; a host drafter's one
    # verification step per launch (plain stretches: the T = 1 kernel, many steps per launch)
    supports_drafter = True
    verifies_in_kernel = True  # drafts are scored by its T-position kernels, not by `logits`
    step_costs: dict[int, float] | None = None  # {T: cost of a T-position step} (DraftPolicy)
    # host drafters' steps timed for their policy (DraftPolicy.timed): on the GPU, where a
    # drafter's forward and a launch per verification step cost what the table does not see
    times_drafting = False
    # the device n-gram drafter's kernel switches per step (state[STEP_ONE]) among one position
    # (where the lookup proposes nothing or too weakly), `switch_narrow` positions and switch_t
    # (by the match behind the drafts: switch_match_min / _wide below), the whole sequence in
    # one launch; its records are the T = 1 plan's matvec tiles (Tiling.one_tiles), so a
    # one-position step costs a T = 1 step (0.99-1.01 on the SmolLM2, Qwen3-1.7B and
    # Llama-3.2-1B shapes). H200, embedded model, replay end to end against plain decode, same
    # call (bench/results/spec-decode-gpu-20261130-s13, run 2): T = 16 with 2-position narrow
    # steps edit_file 1.57x, plain_chat 1.02x, all traces 1.35x; switching between 1 and 4
    # positions 1.42x / 1.04x / 1.28x (run 1: 1 and 8, 1 and 16 positions: 1.34x / 1.49x on
    # edit_file, 0.86x / 0.91x on chat); with the widths by match (session 14, same replay,
    # bench/results/spec-decode-gpu-20261130-s14 runs 4-5) edit_file 1.87x (decoding 1.96x),
    # 2.08x with the traces' tools declared (decoding 2.28x). switch_t 0: the pausing kernel
    # (one T per launch, DraftPolicy's pauses and probes between launches); switch_narrow 0:
    # two widths, 1 and T
    switch_t = 16
    switch_narrow = 2
    # switching: steps run as one position (probes aside) while the mean of kept drafts per
    # step is below this fraction of the break-even mean (DraftPolicy.break_even, of the
    # narrow step where there is one). H200, embedded model, replay, switching between 1 and 4
    # positions: at the break-even itself plain_chat 0.96x (its mean, 0.47, sits at the
    # break-even of a T = 4 step, and the mean's dips switch off steps that paid), at no floor
    # 1.07x (bench/results/spec-decode-gpu-20261130-s12)
    switch_floor = 0.5
    # switching: the width of a drafting step by the length of the lookup's match behind its
    # drafts (weights.D_CONF: the n-gram found, extended back; SuffixDecoding's rule): below
    # switch_match_min one position, from switch_match_wide on (with narrow steps) the wide
    # step at once; switch_need: widen also after a step that kept that many drafts (None:
    # only by the match). The embedded model's greedy outputs of the trace set, at the H200's
    # step costs (tsim, bench/results/spec-decode-cpu-20261130-s14): widening after a full
    # narrow step 1.92x on edit_file, by the match (2 and 4, need None) 2.15x. H200, replay,
    # same call: edit_file decoding 1.90x against 1.68x (bench/results/
    # spec-decode-gpu-20261130-s14, run 2)
    switch_match_min = 2
    switch_match_wide = 4
    switch_need: int | None = None
    # an MTP module run inside the switching kernel as the lookup's fallback (attach_mtp, the
    # "ngram+mtp" drafter): its layer is layer L of the stacked weights and of every cache's
    # K/V (kv_extra_layers); None: not attached
    mtp_module: Any = None
    # its ops run only after steps whose next step may use its draft (the lookup has none),
    # over the kept positions since it last ran, at most T (weights.M_LAZY: older ones keep
    # stale K/V, lowering its acceptance only); False: after every step, its K/V whole
    mtp_lazy = True

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_len: int, programs_per_sm: int | None = None,
                 num_programs: int | None = None, maxnreg: int | None = None,
                 num_warps: int = 4):
        from ...kernels.monokernel import weights as W
        from ...kernels.monokernel.kernel import Monokernel, interpreting
        from ...kernels.monokernel.plan import plan

        if device.type == "cpu" and not interpreting():
            raise RequestError("the monokernel backend needs a CUDA device (on CPU it runs only "
                               "under TRITON_INTERPRET=1, for tests; use --backend reference)")
        if device.type not in ("cpu", "cuda"):
            raise RequestError(f"the monokernel backend does not run on {device.type}")
        if cfg.head_dim not in (16, 32, 64, 128, 256):
            raise RequestError(f"the monokernel backend does not support head_dim "
                               f"{cfg.head_dim}")
        self.cfg, self.device, self.dtype, self.max_len = cfg, device, dtype, max_len
        mw = build_weights(cfg, weights, device, dtype)
        self.model = Transformer(cfg, mw, max_len)  # prefill path, same weights and cache
        self.w = W.pack_weights(cfg, mw, self.model.cos, self.model.sin)
        small = cfg.decode_weight_bytes(dtype.itemsize) < 10**9
        self.step_costs = (None if device.type != "cuda" else
                           dict(H200_STEP_COSTS_SMALL if small else H200_STEP_COSTS))
        self.times_drafting = device.type == "cuda"
        self._kernel_opts = {"maxnreg": maxnreg if device.type == "cuda" else None,
                             "num_warps": num_warps}
        self._spec_kernels: dict[tuple[int, int], Any] = {}  # (T, narrow) -> kernel

        def build(programs: int) -> None:
            self.plan = plan(cfg, programs, 1, max_len, wbytes=self.w.w_qkv.element_size())
            self.kernel = Monokernel(self.plan, self.w, **self._kernel_opts)

        if programs_per_sm is None:  # measured on an H200 (bench/results/monokernel-launch-
            # 20261129): 2 programs of 4 warps per SM, registers uncapped (no spills), us per
            # step at ctx 1024 against 2 x 8 warps capped at 128 registers (1 x 8 for
            # SmolLM2): Qwen3-1.7B 1,383 vs 1,504, Llama-3.2-1B 862 vs 918, SmolLM2-135M 638
            # vs 723, Qwen3-8B 4,311 vs 4,654; 3 x 4 warps or 4 x 2 warps: slower or (T > 1)
            # not resident
            programs_per_sm = 2
        if num_programs is not None or device.type == "cpu":
            build(num_programs or 1)  # the interpreter runs programs one after another
        else:  # as many programs per SM as fit (compiles the greedy kernel once, here)
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            build(programs_per_sm * sms)
            k = torch.zeros(cfg.num_layers, cfg.num_kv_heads, 16, cfg.head_dim, dtype=dtype,
                            device=device)
            try:
                fit = self.kernel.resident_per_sm(
                    W.alloc_buffers(self.plan, device, dtype, k, k.clone()), sampling=False)
            except (AttributeError, TypeError):  # compiled-kernel API of another triton
                fit = programs_per_sm
            if fit < 1:
                raise RequestError("the monokernel does not fit on one SM of this GPU")
            if fit < programs_per_sm:
                build(fit * sms)
        self._bufs: weakref.WeakKeyDictionary[KVCache, Any] = weakref.WeakKeyDictionary()

    def attach_mtp(self, module: Any) -> None:
        """Run `module` (spec_decode.mtp.MtpWeights, on this backend's device and dtype, the
        main model's embedding and head shared) inside the switching kernel as the n-gram
        lookup's fallback: the weights are re-stacked with its layer as layer L (the kernels
        rebuilt over them) and caches made from now on have K/V for it. Before new_cache."""
        from ...kernels.monokernel import weights as W
        from ...kernels.monokernel.kernel import Monokernel

        if self.mtp_module is module:
            return
        if self.mtp_module is not None:
            raise RequestError("monokernel: an MTP module is attached already")
        if module.embed is not None or module.head is not None:
            raise RequestError("monokernel: an MTP module with its own embedding or head does "
                               "not run in the kernel")
        self.w = W.attach_mtp(self.cfg, self.w, self.model.w, module)
        self.kernel = Monokernel(self.plan, self.w, **self._kernel_opts)
        self._spec_kernels.clear()
        self._bufs = weakref.WeakKeyDictionary()
        self.kv_extra_layers, self.keep_hidden, self.mtp_module = 1, True, module
        self._mtp_tokens: weakref.WeakKeyDictionary[KVCache, list[int]] = (
            weakref.WeakKeyDictionary())
        self._fill_bufs: weakref.WeakKeyDictionary[KVCache, Any] = weakref.WeakKeyDictionary()
        self._fill_k = None

    def uses_mtp(self, drafter: Any, automaton: Any, switch: bool, T: int) -> bool:
        """The switching kernel runs the attached MTP module for this decode: the drafter is
        the lookup with an MTP fallback (spec_decode.mtp.NgramMtpDrafter), its narrow steps
        exist, no constraint (the module's draft is not walked through the automaton)."""
        return (self.mtp_module is not None and getattr(drafter, "mtp", None) is not None
                and switch and automaton is None and self._narrow(T, switch) >= 2)

    def _fill_module(self, cache: KVCache, hist: list[int]) -> None:
        """The module's K/V of the positions before the decode's first (position len(hist) -
        1) that no kernel wrote yet: from the first position whose tokens differ from those
        the cache's module K/V was computed from, by the fill kernel (plan(fill=True): the
        module's ops alone over 16 positions a step, from the kept hidden states), queued
        before the decode's launch (an eager torch fill cost ~2-3 ms of host time per turn
        on an H200 machine, whatever the positions: bench/results/mtp-kernel-gpu-20261130-s16;
        it stays for a prompt within 16 positions of the cache's end)."""
        from ...kernels.monokernel import weights as W
        from ...spec_decode.mtp import common_prefix, fill_module_kv

        same = common_prefix(self._mtp_tokens.get(cache, []), hist)
        start, end = max(same - 1, 0), len(hist) - 1
        if end + 16 > cache.capacity:  # (its last step's rows would pass the cache's end)
            L = self.cfg.num_layers
            fill_module_kv(self.cfg, self.mtp_module, self.w.embed, self.w.cos, self.w.sin,
                           cache.k[L], cache.v[L], cache.hidden, hist, start, end)
            return
        fb = self._fill_bufs.get(cache)
        if fb is None:
            fb = self._fill_bufs[cache] = W.alloc_buffers(
                self._fill_kernel().plan, self.device, self.dtype, cache.k, cache.v,
                hidden=cache.hidden)
        steps = W.start_fill(fb, hist, start, end)
        if steps:
            self._fill_kernel().launch(fb, steps)

    def _fill_kernel(self):
        """The module fill's kernel (built on first use, this backend's program count)."""
        from ...kernels.monokernel.kernel import Monokernel
        from ...kernels.monokernel.plan import plan

        if self._fill_k is None:
            pl = plan(self.cfg, self.plan.num_programs, 16, self.max_len,
                      wbytes=self.w.w_qkv.element_size(), mtp=True, fill=True)
            self._fill_k = Monokernel(pl, self.w, **self._kernel_opts)
        return self._fill_k

    def _buffers(self, cache: KVCache, T: int = 1, narrow: int = 0, mtp: bool = False):
        """The cache's kernel buffers, shaped for steps of up to T positions (every kernel of
        this backend runs on them: the T-dependent ones are per-step scratch or row 0);
        `narrow`: of the kernel the step runs (_kernel_for), planned once."""
        from ...kernels.monokernel.weights import alloc_buffers

        b = self._bufs.get(cache)
        if b is None or b.tokens.shape[0] < T or (mtp and b.m_stat.shape[1] == 1):
            pl = self.plan if T == 1 else self._kernel_for(T, narrow, mtp).plan
            b = self._bufs[cache] = alloc_buffers(pl, self.device, self.dtype, cache.k,
                                                  cache.v, pin=self.device.type == "cuda",
                                                  hidden=cache.hidden)
        return b

    def _kernel_for(self, T: int, narrow: int = 0, mtp: bool = False):
        """The kernel of T-position steps (speculative verification), planned and built on
        first use with this backend's program count; `narrow`: with steps of that many
        positions too (Tiling.narrow); `mtp`: with the attached MTP module's ops."""
        from ...kernels.monokernel.kernel import Monokernel
        from ...kernels.monokernel.plan import Tiling, plan

        if T == 1:
            return self.kernel
        k = self._spec_kernels.get((T, narrow, mtp))
        if k is None:
            pl = plan(self.cfg, self.plan.num_programs, T, self.max_len,
                      tiling=Tiling(narrow=narrow), wbytes=self.w.w_qkv.element_size(),
                      mtp=mtp)
            k = self._spec_kernels[(T, narrow, mtp)] = Monokernel(pl, self.w,
                                                                  **self._kernel_opts)
        return k

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int, automaton: Any = None,
               drafter: Any = None, history: list[int] | None = None,
               logprobs: int | None = None) -> Iterator[int | TokenLogprob]:
        from ...kernels.monokernel import weights as W
        from ...kernels.monokernel.sampling import choose, sampling_mode

        if drafter is not None and logprobs is not None:
            drafter = None  # logprobs: one step per launch, each scored (no drafting)
        if (drafter is not None and getattr(drafter, "needs_hidden", False)
                and getattr(cache, "hidden", None) is None):
            raise RequestError("monokernel: the MTP drafter reads the main model's hidden "
                               "states, which this KV cache does not keep (set the backend's "
                               "keep_hidden before making the cache, as Engine(drafter=) does)")
        if logprobs is not None and automaton is not None:
            raise RequestError("logprobs: the monokernel backend reports logprobs only without "
                               "a structured-output constraint (its kernel masks the logits in "
                               "place); use the graph or reference backend")
        raw = logits

        cap = self.plan.tiling.cand
        dev_auto, cstate = None, 0
        if automaton is not None:
            dev_auto = automaton.to(self.device)
            logits = dev_auto.mask_logits(logits, automaton.state0)
        mode, top_k = sampling_mode(params.temperature, params.top_k, params.top_p,
                                    self.cfg.vocab_size, cap)
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)))
        first, over = choose(logits, mode, params.temperature, top_k, params.top_p,
                             seed + start, cap)
        if over:
            raise RequestError(f"monokernel: the top-p nucleus reaches past its {cap} "
                               "candidates (set top_k, or use another backend)")
        yield first if logprobs is None else token_logprob(raw, first, logprobs)
        if first in stop_ids:
            return
        if automaton is not None:
            cstate = automaton.next(automaton.state0, first)
            if cstate < 0:
                raise RequestError(f"monokernel: token {first} is not allowed by the constraint "
                                   "(non-finite logits?)")
            if automaton.is_done(cstate):  # only EOS is left: no forward pass
                yield automaton.eos_ids[0]
                return
        if max_new <= 1:
            return
        T = 1
        switch = False
        if drafter is not None:
            policy = draft_policy(self, drafter)
            T = min(16, policy.k_max + 1)
            switch = (self.switch_t > 1 and policy.adaptive
                      and self.drafts_on_device(drafter))
            if switch:
                T = min(T, self.switch_t)
        mtp = (drafter is not None and len(history or []) == start
               and self.uses_mtp(drafter, automaton, switch, T))
        b = self._buffers(cache, T, self._narrow(T, switch), mtp)
        W.start_sequence(b, self.w, token=first, pos=start, max_new=max_new,
                         stop_ids=sorted(stop_ids), capacity=cache.capacity, mode=mode,
                         temperature=params.temperature, top_k=top_k, top_p=params.top_p,
                         seed=seed, automaton=dev_auto, cstate=cstate,
                         keep_hidden=cache.hidden is not None)
        if logprobs is not None:
            yield from self._stepwise(b, max_new, mode != W.GREEDY, logprobs)
        elif drafter is not None and self.drafts_on_device(drafter):
            yield from self._speculate_device(cache, b, T, policy, drafter,
                                              list(history or []) + [first], max_new,
                                              mode != W.GREEDY, automaton, stop_ids, switch,
                                              mtp)
        elif drafter is not None:
            yield from self._speculate(cache, b, T, policy, drafter, list(history or []) + [first],
                                       max_new, mode != W.GREEDY, automaton, stop_ids)
        else:
            yield from self._stream(b, max_new, sampling=mode != W.GREEDY)

    def _speculate(self, cache: KVCache, b, T: int, policy: Any, drafter: Any, hist: list[int],
                   max_new: int, sampling: bool, automaton: Any,
                   stop_ids: frozenset[int]) -> Iterator[int]:
        """Speculative decode with a host drafter: per step the policy's k drafts (trimmed by
        the constraint and stop ids as the reference backend does) go in as the inputs of one
        launch of the T-position kernel, which verifies them in SAMPLE (greedy: exact match;
        sampling: the token sampled at each position must equal the draft, so the output is
        the target's distribution) and emits the kept ones plus one; while the policy has
        drafting off, the T = 1 kernel runs its plain steps in one launch."""
        from ...kernels.monokernel import weights as W

        if hasattr(drafter, "bind"):
            drafter.bind(cache)
        spec = self._kernel_for(T)
        policy.step_T = T  # every verification step is one launch of this kernel
        clock = time.perf_counter
        seen = 1
        while seen < max_new:
            room = max_new - seen - 1
            # a timed policy weighs drafting steps against measured plain ones: some first
            calibrate = policy.timed and policy.plain_s is None and room > 0
            k = 0 if calibrate else min(policy.next_k(), T - 1, room)
            props: list[int] = []
            guessed = 0
            t0 = clock()
            if k > 0:
                cs = int(b.state[W.C_STATE]) if automaton is not None else 0
                props, guessed = propose_drafts(drafter, hist, k, k, automaton, cs, stop_ids)
            t1 = clock()
            if props:
                W.set_step_inputs(b, self.w, T, props, automaton, last=hist[-1])
                toks = self._run(spec, b, 1, sampling, seen)
                if policy.timed:
                    policy.observe_time("draft", t1 - t0, guessed)
                    policy.observe_time("verify", clock() - t1, T=T)
            else:  # nothing to verify: plain steps, several per launch while drafting is off
                n_steps = min(8, room) if calibrate else 1 + policy.take_plain(room)
                toks = self._run(self.kernel, b, n_steps, sampling, seen)
                if policy.timed:
                    policy.observe_time("plain", clock() - t1, len(toks))
            hist.extend(toks)
            yield from toks
            if props:
                kept = min(max(0, len(toks) - 1), guessed)
                drafter.observe(props[:guessed], kept)
                policy.update(guessed, kept)
            if int(b.state[W.DONE]) or not toks:
                return
            seen += len(toks)

    def _narrow(self, T: int, switch: bool) -> int:
        """The narrow steps' positions of a T-position switching kernel (0: none)."""
        return self.switch_narrow if switch and 1 < self.switch_narrow < T else 0

    def draft_k_max(self, drafter: Any) -> int | None:
        """The policy's ceiling of drafts per step this backend wants for `drafter`
        (DraftPolicy.for_backend; None: the policy's default): the switching kernel's wide
        steps, switch_t - 1, where the device drafts with narrow steps too (the narrow steps
        are what adapts)."""
        if (self.drafts_on_device(drafter) and self.switch_t > 1
                and 1 < self.switch_narrow < self.switch_t):
            return self.switch_t - 1
        return None

    def drafts_on_device(self, drafter: Any) -> bool:
        """The drafter is the n-gram lookup the kernel runs itself (ops_sample.draft_next): an
        NgramDrafter (not a subclass with its own rule) that allows it (`on_device`), or the
        lookup with an MTP fallback (NgramMtpDrafter) whose module is the attached one (the
        kernel runs it too; another module drafts on the host)."""
        from ...spec_decode.drafters import NgramDrafter

        if not isinstance(drafter, NgramDrafter) or not getattr(drafter, "on_device", False):
            return False
        mtp = getattr(drafter, "mtp", None)
        if mtp is not None:
            return self.mtp_module is not None and mtp.modules[0] is self.mtp_module
        return type(drafter).propose is NgramDrafter.propose

    def _speculate_device(self, cache: KVCache, b, T: int, policy: Any, drafter: Any,
                          hist: list[int], max_new: int, sampling: bool, automaton: Any,
                          stop_ids: frozenset[int], switch: bool = False,
                          mtp: bool = False) -> Iterator[int]:
        """Speculative decode with the n-gram drafter on the device: one launch of the
        T-position kernel runs a whole stretch of steps; after each step SAMPLE appends the
        emitted tokens to the device history, looks up the next step's drafts there
        (NgramDrafter's rule, trimmed as propose_drafts trims) and keeps the running mean of
        accepted tokens per step, ending the launch (DONE_PAUSE) when the mean falls below the
        policy's break-even for T (every step of that kernel costs cost(T), whatever it
        drafts, so it drafts k_max = T - 1 and the only choice left is whether to run it).
        Paused, the policy's plain stretch runs on the T = 1 kernel (one launch), then a probe
        launch of the T kernel, whose first step's count replaces the mean (DraftPolicy's
        probes and back-off). The host drafts only a launch's first step. A T kernel that
        reaches the KV capacity hands the rest to the T = 1 kernel. `switch` (switch_t): no
        pauses; one launch runs the sequence, each step at T positions when the drafter has
        drafts for it, else as a one-position step of the same kernel (state[STEP_ONE]); below
        the break-even mean the steps run as one position until a probe is due (the policy's
        probe_every, doubled up to max_probe_every after each probe that does not pay), all
        decided by SAMPLE on the device. `mtp` (uses_mtp): the switching kernel runs the
        attached MTP module too, whose draft makes a narrow step where the lookup has none
        (weights.start_mtp, the drafter's floor); its K/V of the positions before the decode
        are filled on the host first."""
        from ...kernels.monokernel import weights as W
        from ...spec_decode.policy import expected_tokens

        adaptive = policy.adaptive
        pausing = adaptive and not switch  # launches that pause, plain stretches, probes
        floor = policy.break_even(T) if adaptive else None
        if floor is not None and floor > T - 1:  # even accepting every draft would not pay
            yield from self._stream(b, max_new, sampling)
            return
        narrow = self._narrow(T, switch)
        if switch:
            floor = self.switch_floor * (policy.break_even(narrow) if narrow else floor)
        spec = self._kernel_for(T, narrow, mtp)
        k = T - 1 if adaptive else min(policy.k, T - 1)
        acc0 = policy.step_accepted
        if acc0 is None:  # the policy's acceptance estimate, as accepted tokens per step
            acc0 = expected_tokens(policy.rate, k) - 1
        # the device looks up what the host drafter would (its view, then the history), in
        # the history buffer with room for the sequence's own tokens
        rule = W.start_drafting(b, drafter.corpus(hist, b.hist.numel() - max_new - T),
                                min_ngram=drafter.min_ngram,
                                max_ngram=drafter.max_ngram, k=k, accepted=acc0,
                                alpha=policy.ewma, floor=floor, switch=switch,
                                probe_every=policy.probe_every,
                                max_probe_every=policy.max_probe_every, narrow=narrow,
                                need=(self.switch_need or T) if narrow else 0,
                                match_min=self.switch_match_min if switch else 0,
                                match_wide=self.switch_match_wide)
        if mtp:
            self._fill_module(cache, hist)
            W.start_mtp(b, drafter.floor, lazy=self.mtp_lazy)
        seen = 1
        steps_now = 0  # state[STEPS] as the last launch left it (start_sequence: 0)
        launches = 0
        try:
            while seen < max_new:
                plain = pausing and policy.next_k() == 0
                if plain:  # drafting is off: the plain steps until the next probe, one launch
                    kern, n = self.kernel, 1 + policy.take_plain(max_new - seen - 1)
                else:
                    kern, n, probe = spec, max_new - seen, pausing and policy.probing
                    cs = int(b.state[W.C_STATE]) if automaton is not None else 0
                    # (with the module in the kernel, the host's first step is the lookup's)
                    props, guessed = propose_drafts(drafter.lookup if mtp else drafter, hist,
                                                    k, k, automaton, cs, stop_ids)
                    W.set_step_inputs(b, self.w, T, props, automaton, guessed=guessed,
                                      switch=switch, narrow=bool(narrow),
                                      conf=_confidence(drafter, hist, props, guessed),
                                      last=hist[-1], rule=rule)
                    if pausing or launches:  # (start_drafting set it for the first launch)
                        b.state[W.D_PROBE] = int(probe)
                    steps0 = steps_now
                seen = yield from self._follow(kern, b, n, sampling, seen, hist)
                launches += 1
                st = b.state.tolist()  # (one read of the device state per launch)
                steps_now = st[W.STEPS]
                done = st[W.DONE]
                if not plain:
                    policy.step_accepted = st[W.D_EWMA] / W.Q16
                    if pausing:
                        policy.launch_ended(done == W.DONE_PAUSE, probe, st[W.STEPS] - steps0)
                if done == W.DONE_PAUSE:
                    b.state[W.DONE] = 0
                elif (done == W.DONE_CAPACITY and kern is spec
                      and st[W.POS] < st[W.CAPACITY]):
                    b.state[W.DONE] = 0  # room for fewer than T positions: the rest plainly
                    b.host[W.H_DONE] = 0
                    yield from self._stream(b, max_new, sampling, seen)
                    return
                elif done:
                    return
        finally:
            st = b.state.tolist()
            by = st[W.D_BY_WIDTH:W.D_BY_WIDTH + 3]
            drafter.observe_counts(st[W.D_STEPS], st[W.D_DRAFTED], st[W.D_ACCEPTED],
                                   {T: by[0], 1: by[1], **({narrow: by[2]} if narrow else {})})
            if mtp:  # the module's steps (one draft each); its K/V now covers these tokens
                drafter.observe_mtp(st[W.M_STEPS], st[W.M_ACCEPTED])
                self._mtp_tokens[cache] = list(hist[:st[W.M_KV] + 1])
                fb = self._fill_bufs.get(cache)
                if fb is not None:  # (a fill that stalled: its recorded error)
                    self._fill_kernel().check(fb)

    def _stepwise(self, b, max_new: int, sampling: bool, k: int) -> Iterator[TokenLogprob]:
        """One step per launch; each token scored on the logits row its step wrote."""
        from ...kernels.monokernel import weights as W

        seen = 1
        while seen < max_new:
            toks = self._run(self.kernel, b, 1, sampling, seen)  # one (T = 1, no constraint)
            yield from (token_logprob(b.logits[0], t, k) for t in toks)
            if int(b.state[W.DONE]) or not toks:  # ended (stop token, cancelled, no step)
                return
            seen += len(toks)

    def _run(self, kern, b, n_steps: int, sampling: bool, seen: int) -> list[int]:
        """Launch `kern` for up to n_steps and wait for it: the tokens it emitted (the host
        ring from output index `seen` on)."""
        from ...kernels.monokernel import weights as W

        kern.launch(b, n_steps, sampling=sampling)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        kern.check(b)
        return [int(b.host[W.HOST_HDR + i]) for i in range(seen, int(b.host[W.H_PROGRESS]))]

    def _stream(self, b, max_new: int, sampling: bool, seen: int = 1) -> Iterator[int]:
        """Plain decode on the T = 1 kernel from output index `seen`, many steps per launch."""
        from ...kernels.monokernel import weights as W

        while seen < max_new:
            seen = yield from self._follow(self.kernel, b, max_new - seen, sampling, seen)
            if int(b.state[W.DONE]):
                return

    def _follow(self, kern, b, n_steps: int, sampling: bool, seen: int,
                sink: list[int] | None = None) -> Iterator[int]:
        """Launch `kern` for up to n_steps and yield the tokens it writes to the host ring (from
        output index `seen` on) while it runs, also appending them to `sink`; returns the new
        `seen`. Closed early: asks the kernel to stop (cancel flag) and waits until it has."""
        from ...kernels.monokernel import weights as W

        running = None
        try:
            kern.launch(b, n_steps, sampling=sampling)
            if self.device.type == "cuda":
                running = torch.cuda.Event()
                running.record()
            while True:  # yield tokens as the kernel writes them
                finished = running is None or running.query()
                n = int(b.host[W.H_PROGRESS])
                for i in range(seen, n):
                    tok = int(b.host[W.HOST_HDR + i])
                    if sink is not None:
                        sink.append(tok)
                    yield tok
                seen = n
                if finished:
                    break
                time.sleep(POLL_S)
            running = None
            kern.check(b)
            return seen
        finally:
            if running is not None:  # closed early: ask the kernel to stop, wait until it has
                b.host[W.H_CANCEL] = 1
                running.synchronize()


def _confidence(drafter: Any, hist: list[int], props: list[int], guessed: int) -> int:
    """What the device drafter stores in weights.D_CONF with its drafts, for the host's
    proposal of a launch's first step: the lookup's match length (extended back) when it
    proposed, or the automaton-forced drafts if more."""
    from ...kernels.monokernel.sampling import match_span

    span = 0
    if guessed:
        span = match_span(*drafter.match(hist))
    return max(span, len(props) - guessed)
