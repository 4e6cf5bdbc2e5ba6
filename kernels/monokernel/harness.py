"""A model, its plan and one sequence's buffers, set up for the VM, the kernel and the reference.

Shared by the tests, diff.py and gpu_check.py: random weights at any shape (HF names, built on
the target device, never zeros), the reference transformer over the same (stacked) weights, a
KV cache, a prefill, and the host-side start of a decode (first token from the prefill logits by
the kernel's own sampling rule). Knows nothing about the engine's sessions or tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from agentfast.engine import model as M
from agentfast.engine.config import ModelConfig

from . import weights as W
from .plan import Plan, Tiling, plan
from .sampling import choose, sampling_mode
from .vm import VM


def random_state_dict(cfg: ModelConfig, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32, seed: int = 0
                      ) -> dict[str, torch.Tensor]:
    """HF-named random weights: matrices ~ N(0, 1/fan_in), embedding ~ N(0, 0.01), norms ~
    1 + N(0, 0.01), biases ~ N(0, 0.01)."""
    shapes = (getattr(M, "expected_shapes", None) or M._expected_shapes)(cfg)
    g = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g, device=device, dtype=torch.float32)
        if name.endswith("norm.weight"):
            t = 1 + 0.1 * t
        elif name.endswith(".bias"):
            t = 0.1 * t
        elif "embed_tokens" in name:
            t = 0.1 * t  # small next to the layers' output: tied heads do not echo the input
        else:
            t = t / math.sqrt(shape[-1])
        sd[name] = t.to(dtype)
    return sd


@dataclass
class Harness:
    cfg: ModelConfig
    model: M.Transformer
    w: W.MonoWeights
    plan: Plan
    bufs: W.Buffers
    cache: M.KVCache  # bufs.k_cache / v_cache are its tensors
    max_len: int
    mtp: object = None  # the MTP module (spec_decode.mtp.MtpWeights) a plan with mtp=True runs

    @classmethod
    def build(cls, cfg: ModelConfig, num_programs: int, T: int, max_len: int,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              seed: int = 0, tiling: Tiling | None = None, ranks: int = 1,
              pin: bool = False, keep_hidden: bool = False, mtp=None) -> Harness:
        """`keep_hidden`: the cache keeps final hidden states (the prefill writes them) and the
        decode started by `start` has the kernel write them too (Buffers.hidden). `mtp`: a
        callable (HF-named weights -> spec_decode.mtp.MtpWeights on the device) whose module
        the plan runs after SAMPLE (plan(mtp=True); the cache gets its layer, keeps hidden
        states)."""
        sd = random_state_dict(cfg, device, dtype, seed)
        mw = M.build_weights(cfg, sd, device, dtype)
        module = mtp(sd) if mtp is not None else None
        del sd
        model = M.Transformer(cfg, mw, max_len)
        w = W.pack_weights(cfg, mw, model.cos, model.sin)
        if module is not None:
            w = W.attach_mtp(cfg, w, mw, module)
        p = plan(cfg, num_programs, T, max_len, ranks=ranks, tiling=tiling,
                 wbytes=torch.finfo(dtype).bits // 8, mtp=module is not None)
        cache = model.new_cache(initial=max_len, keep_hidden=keep_hidden or module is not None,
                                extra_layers=int(module is not None))
        bufs = W.alloc_buffers(p, device, dtype, cache.k, cache.v, pin=pin, hidden=cache.hidden)
        return cls(cfg, model, w, p, bufs, cache, max_len, module)

    def replan(self, **kw) -> Harness:
        """Same weights and cache, another plan (program count, T, tiling...)."""
        args = dict(num_programs=self.plan.num_programs, T=self.plan.T, max_len=self.max_len,
                    ranks=self.plan.ranks, tiling=self.plan.tiling,
                    wbytes=self.w.w_qkv.element_size(), mtp=self.plan.mtp)
        p = plan(self.cfg, **{**args, **kw})
        dev = self.bufs.x.device
        bufs = W.alloc_buffers(p, dev, self.bufs.x.dtype, self.bufs.k_cache, self.bufs.v_cache,
                               pin=self.bufs.host.is_pinned(), hidden=self.cache.hidden)
        return Harness(self.cfg, self.model, self.w, p, bufs, self.cache, self.max_len,
                       self.mtp)

    def start(self, prompt: list[int], max_new: int, *, temperature: float = 0.0,
              top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: tuple = (),
              drafts: list[int] | None = None, automaton=None) -> int:
        """Prefill `prompt` into the cache, choose the first token, set up the buffers (with
        a constraints.TokenAutomaton: the first token chosen under its start state)."""
        ids = torch.tensor(prompt, device=self.bufs.x.device)
        logits = self.model.forward(ids, 0, self.cache, last_only=True)[0]
        cstate = 0
        if automaton is not None:
            automaton = automaton.to(self.bufs.x.device)
            logits = automaton.mask_logits(logits, automaton.state0)
        mode, k = sampling_mode(temperature, top_k, top_p, self.cfg.vocab_size,
                                self.plan.tiling.cand)
        first, _ = choose(logits, mode, temperature, k, top_p, seed + len(prompt),
                          self.plan.tiling.cand)
        if automaton is not None:
            cstate = automaton.next(automaton.state0, first)
        if self.mtp is not None:  # the module's K/V of the prompt's positions (the host's)
            from agentfast.spec_decode.mtp import fill_module_kv

            L = self.cfg.num_layers
            fill_module_kv(self.cfg, self.mtp, self.w.embed, self.w.cos, self.w.sin,
                           self.cache.k[L], self.cache.v[L], self.cache.hidden,
                           list(prompt) + [first], 0, len(prompt))
        W.start_sequence(self.bufs, self.w, token=first, pos=len(prompt), max_new=max_new,
                         stop_ids=list(stop_ids), capacity=self.max_len, mode=mode,
                         temperature=temperature, top_k=k, top_p=top_p, seed=seed,
                         drafts=drafts, automaton=automaton, cstate=cstate,
                         keep_hidden=self.cache.hidden is not None)
        return first

    def tokens(self, bufs: W.Buffers | None = None) -> list[int]:
        b = bufs or self.bufs
        return b.host[W.HOST_HDR:W.HOST_HDR + int(b.host[W.H_PROGRESS])].tolist()

    def vm(self, bufs: W.Buffers | None = None) -> VM:
        return VM(self.plan, self.w, [bufs or self.bufs])

    def reference_greedy(self, prompt: list[int], n: int, automaton=None
                         ) -> tuple[list[int], torch.Tensor]:
        """n greedy tokens from the reference transformer on its own cache, and the logits
        [n, V] that chose them. With a constraints.TokenAutomaton: masked by its state, and
        after a token that leaves only EOS, its first EOS id (and no more)."""
        cache = self.model.new_cache(initial=self.max_len)
        logits = self.model.forward(torch.tensor(prompt, device=self.bufs.x.device), 0, cache,
                                    last_only=True)
        out, rows = [], []
        state = automaton.state0 if automaton is not None else 0
        for i in range(n):
            rows.append(logits[0])
            row = logits[0] if automaton is None else automaton.mask_logits(logits[0], state)
            out.append(int(torch.argmax(row)))
            if automaton is not None:
                state = automaton.advance(state, out[-1])
                if automaton.is_done(state):
                    out.append(automaton.eos_ids[0])
                    break
            if i + 1 < n:
                logits = self.model.forward(torch.tensor([out[-1]], device=logits.device),
                                            len(prompt) + i, cache)
        return out, torch.stack(rows)
