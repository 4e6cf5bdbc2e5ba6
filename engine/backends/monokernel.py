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
from .prefill import ReferencePrefill

POLL_S = 20e-6  # host sleep between reads of the progress counter


class MonokernelBackend(ReferencePrefill):
    name = "monokernel"
    supports_constraints = True  # masked and advanced inside the kernel
    # decode(logprobs=k): the kernel runs one step per launch and the host scores the logits
    # row the step's LM head wrote (no extra forward; unconstrained requests only: with a
    # constraint the kernel masks that row in place)
    supports_logprobs = True

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_len: int, programs_per_sm: int | None = None,
                 num_programs: int | None = None, maxnreg: int | None = 128):
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
        def build(programs: int) -> None:
            self.plan = plan(cfg, programs, 1, max_len, wbytes=self.w.w_qkv.element_size())
            # 2 programs of 8 warps per SM need <= 128 registers/thread (spills to local
            # memory where an op needs more): the fastest setting measured (BENCH.md)
            self.kernel = Monokernel(self.plan, self.w, maxnreg=maxnreg if device.type == "cuda"
                                     else None)

        if programs_per_sm is None:  # measured on an H200 (BENCH.md, tune run 15): one per SM
            # is faster below ~1 GB of weights (SmolLM2-135M 752 vs 802 us/step), two above
            # (Qwen3-1.7B 1,553 vs 1,804; Llama-3.2-1B 949 vs 1,152)
            programs_per_sm = 1 if cfg.decode_weight_bytes(dtype.itemsize) < 10**9 else 2
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

    def _buffers(self, cache: KVCache):
        from ...kernels.monokernel.weights import alloc_buffers

        b = self._bufs.get(cache)
        if b is None:
            b = self._bufs[cache] = alloc_buffers(self.plan, self.device, self.dtype, cache.k,
                                                  cache.v, pin=self.device.type == "cuda")
        return b

    def decode(self, cache: KVCache, logits: torch.Tensor, start: int, params: SamplingParams,
               stop_ids: frozenset[int], max_new: int, automaton: Any = None,
               logprobs: int | None = None) -> Iterator[int | TokenLogprob]:
        from ...kernels.monokernel import weights as W
        from ...kernels.monokernel.sampling import choose, sampling_mode

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
        b = self._buffers(cache)
        W.start_sequence(b, self.w, token=first, pos=start, max_new=max_new,
                         stop_ids=sorted(stop_ids), capacity=cache.capacity, mode=mode,
                         temperature=params.temperature, top_k=top_k, top_p=params.top_p,
                         seed=seed, automaton=dev_auto, cstate=cstate)
        if logprobs is not None:
            yield from self._stepwise(b, max_new, mode != W.GREEDY, logprobs)
        else:
            yield from self._stream(b, max_new, sampling=mode != W.GREEDY)

    def _stepwise(self, b, max_new: int, sampling: bool, k: int) -> Iterator[TokenLogprob]:
        """One step per launch; each token scored on the logits row its step wrote."""
        from ...kernels.monokernel import weights as W

        seen = 1
        while seen < max_new:
            self.kernel.launch(b, 1, sampling=sampling)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.kernel.check(b)
            n = int(b.host[W.H_PROGRESS])
            for i in range(seen, n):  # one token (T = 1, no constraint)
                yield token_logprob(b.logits[0], int(b.host[W.HOST_HDR + i]), k)
            if int(b.state[W.DONE]) or n == seen:  # ended (stop token, cancelled, no step)
                return
            seen = n

    def _stream(self, b, max_new: int, sampling: bool) -> Iterator[int]:
        from ...kernels.monokernel import weights as W

        seen, running = 1, None
        try:
            while seen < max_new:
                self.kernel.launch(b, max_new - seen, sampling=sampling)
                if self.device.type == "cuda":
                    running = torch.cuda.Event()
                    running.record()
                while True:  # yield tokens as the kernel writes them
                    finished = running is None or running.query()
                    n = int(b.host[W.H_PROGRESS])
                    for i in range(seen, n):
                        yield int(b.host[W.HOST_HDR + i])
                    seen = n
                    if finished:
                        break
                    time.sleep(POLL_S)
                running = None
                self.kernel.check(b)
                if int(b.state[W.DONE]) or seen >= max_new:
                    return
        finally:
            if running is not None:  # closed early: ask the kernel to stop, wait until it has
                b.host[W.H_CANCEL] = 1
                running.synchronize()
