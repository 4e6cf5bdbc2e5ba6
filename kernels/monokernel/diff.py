"""Where two executions of the monokernel's plan part: the first buffer that differs.

`first_divergence` runs two runners (VM, kernel, or anything with the same signature) from one
starting state; when their buffers differ after the run it replays step by step and, inside the
failing step, op by op (plans truncated after op K), and names the first op whose output
differs: buffer, layer and op, max abs difference. `reference_divergence` compares the VM with
the reference transformer (T = 1): per step the K/V each layer appended, then the logits.
Knows nothing about how a runner computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .plan import Plan
from .sampling import MIN_KEY, split_keys
from .weights import Buffers, MonoWeights

Runner = Callable[[Plan, Buffers, int], None]  # run(plan, buffers, steps), in place
ORDER = ("qkv", "k_cache", "v_cache", "att_acc", "att_ml", "attn", "part", "x", "act",
         "logits", "lm_val", "lm_idx", "lm_stat", "m_stat", "cand", "hidden", "tokens",
         "drafts", "hist", "state", "host", "ctr", "err")


@dataclass
class Divergence:
    buffer: str
    op: str  # e.g. "layer 3 ATTN (op 13)", or "after the run" when only the end differs
    step: int
    max_abs: float

    def __str__(self) -> str:
        return (f"first difference: buffer {self.buffer!r} after {self.op} in step {self.step}"
                f" (max abs diff {self.max_abs:.3g})")


def compare(a: Buffers, b: Buffers, tol: float = 1e-4,
            skip: tuple[str, ...] = ()) -> tuple[str, float] | None:
    """(first buffer in data-flow order whose max abs difference exceeds tol times its scale,
    that difference), or None. Integer buffers must match exactly (candidate keys: their token
    ids; their logits to tol). `skip`: buffers not compared (bf16: the per-tile argmax indices,
    lm_idx, may pick the other of two logits equal to bf16 rounding)."""
    ta, tb = a.tensors(), b.tensors()
    for name in ORDER:
        if name in skip:
            continue
        x, y = ta[name], tb[name]
        if name == "cand":  # keys hold exact logit bits: compare ids exactly, logits to tol
            x, y = x.cpu(), y.cpu()
            if not torch.equal(x == MIN_KEY, y == MIN_KEY):
                return name, float("inf")
            (vx, ix), (vy, iy) = split_keys(x), split_keys(y)
            live = x != MIN_KEY
            if not torch.equal(ix[live], iy[live]):
                return name, float("inf")
            x, y = vx[live], vy[live]
        if x.dtype.is_floating_point:
            x, y = x.float().cpu(), y.float().cpu()
            fin = torch.isfinite(x) & torch.isfinite(y)
            if not torch.equal(fin, torch.isfinite(x)) or not torch.equal(fin, torch.isfinite(y)):
                return name, float("inf")
            d = (x[fin] - y[fin]).abs().max().item() if fin.any() else 0.0
            scale = max(y[fin].abs().max().item() if fin.any() else 0.0, 1.0)
            if d > tol * scale:
                return name, d
        elif not torch.equal(x.cpu(), y.cpu()):
            return name, (x.cpu().long() - y.cpu().long()).abs().max().item()
    return None


def vm_runner(w: MonoWeights) -> Runner:
    from .vm import VM

    def run(plan: Plan, b: Buffers, steps: int) -> None:
        VM(plan, w, [b]).run(steps)

    return run


def kernel_runner(w: MonoWeights, sampling: bool = False, **kw) -> Runner:
    from .kernel import Monokernel

    cache: dict[int, Monokernel] = {}

    def run(plan: Plan, b: Buffers, steps: int) -> None:
        mk = cache.get(id(plan))
        if mk is None:
            mk = cache[id(plan)] = Monokernel(plan, w, **kw)
        mk.launch(b, steps, sampling=sampling)
        mk.check(b)

    return run


def first_divergence(plan: Plan, start: Buffers, run_a: Runner, run_b: Runner, steps: int = 1,
                     tol: float = 1e-4) -> Divergence | None:
    """None when `steps` steps of both runners end with equal buffers; else the first op (in
    the first step that differs) after which they differ. run_a is the oracle: it advances the
    common state between steps."""
    a, b = start.clone(), start.clone()
    run_a(plan, a, steps)
    run_b(plan, b, steps)
    end = compare(a, b, tol)
    if end is None:
        return None
    state = start.clone()
    for step in range(steps):
        for op in plan.ops:
            cut = plan.truncated(op.seq)
            a, b = state.clone(), state.clone()
            run_a(cut, a, 1)
            run_b(cut, b, 1)
            d = compare(a, b, tol)
            if d is not None:
                return Divergence(d[0], op.name, step, d[1])
        run_a(plan, state, 1)
    return Divergence(end[0], "the run (no single step differs)", steps - 1, end[1])


def reference_divergence(h, prompt: list[int], steps: int, tol: float = 1e-4
                         ) -> Divergence | None:
    """VM (greedy, T = 1) against the reference transformer, from the same prefilled cache:
    per step, the K/V of the new position in every layer, then the logits."""
    from . import weights as W

    assert h.plan.T == 1, "reference_divergence compares one position per step"
    h.start(prompt, steps + 1)
    vm = h.vm()
    ref_cache = h.model.new_cache(initial=h.max_len)
    ref_cache.k.copy_(h.bufs.k_cache)
    ref_cache.v.copy_(h.bufs.v_cache)
    for step in range(steps):
        pos, tok = int(h.bufs.state[W.POS]), int(h.bufs.tokens[0])
        vm.run(1)
        logits = h.model.forward(torch.tensor([tok], device=h.bufs.x.device), pos, ref_cache)
        for li in range(h.cfg.num_layers):
            for name, mine, ref in (("k_cache", h.bufs.k_cache, ref_cache.k),
                                    ("v_cache", h.bufs.v_cache, ref_cache.v)):
                d = (mine[li, :, pos].float() - ref[li, :, pos].float()).abs().max().item()
                if d > tol * max(ref[li, :, pos].abs().max().item(), 1.0):
                    return Divergence(name, f"layer {li} ATTN", step, d)
        d = (h.bufs.logits[0] - logits[0]).abs().max().item()
        if d > tol * max(logits.abs().max().item(), 1.0):
            return Divergence("logits", "LMHEAD", step, d)
        if int(h.bufs.state[W.DONE]):
            break
    return None
