"""Shared helpers of the monokernel tests: interpreter setup, tiny configs, harness builders.

The kernel runs on CPU through the Triton interpreter with one program (every wait is then
satisfied by the program itself), so TRITON_INTERPRET=1 is set before any kernel module is
imported, and monokernel modules imported earlier with the interpreter off are reloaded (as
tests/kernels/kernel_utils.py does). Shapes are tiny: the interpreter runs ~1 s per step.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

from agentfast.engine.config import ModelConfig  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] == "1"
if INTERPRET:
    from triton.runtime.jit import JITFunction

    _k = sys.modules.get("agentfast.kernels.monokernel.kernel")
    if _k is not None and isinstance(_k._monokernel, JITFunction):  # compiled earlier
        for _name in ("sync", "ops_mv", "ops_attn", "ops_sample", "kernel", "diff"):  # deps first
            _m = sys.modules.get(f"agentfast.kernels.monokernel.{_name}")
            if _m is not None:
                importlib.reload(_m)

from agentfast.kernels.monokernel import weights as W  # noqa: E402
from agentfast.kernels.monokernel.harness import Harness  # noqa: E402
from agentfast.kernels.monokernel.kernel import Monokernel  # noqa: E402
from agentfast.kernels.monokernel.plan import Tiling  # noqa: E402

_OLD = tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 9)
interpreted = pytest.mark.skipif(
    not INTERPRET or _OLD,
    reason="runs the kernel in the CPU interpreter (triton >= 3.9, TRITON_INTERPRET=1)")

V = 256


def cfg(name: str) -> ModelConfig:
    """Tiny models: GQA, tied / untied heads, head_dim 64 / 128, q/k norm, biases, window."""
    base = dict(vocab_size=V, hidden_size=128, intermediate_size=192, num_layers=2,
                num_heads=4, num_kv_heads=2, head_dim=64, rms_norm_eps=1e-6)
    over = {
        "llama_gqa_tied_hd64": dict(arch="llama", tie_word_embeddings=True),
        "qwen3_qknorm_hd128": dict(arch="qwen3", head_dim=128, qk_norm=True,
                                   num_kv_heads=1),
        "qwen2_bias_hd64": dict(arch="qwen2", qkv_bias=True, num_heads=2, num_kv_heads=2),
        "mistral_window_hd64": dict(arch="mistral", sliding_window=5, num_kv_heads=1),
        "llama_obias_hd64": dict(arch="llama", o_bias=True, qkv_bias=True, num_heads=6,
                                 num_kv_heads=2, hidden_size=96),
    }[name]
    return ModelConfig(**{**base, **over})


NAMES = ["llama_gqa_tied_hd64", "qwen3_qknorm_hd128", "qwen2_bias_hd64", "mistral_window_hd64",
         "llama_obias_hd64"]
PROMPT = [3, 17, 42, 5, 9, 11]
FAST = Tiling(bn=64, bn_lm=64, attn_splits=2, attn_block=16, cand=16)


def harness(name: str, T: int = 1, ranks: int = 1, max_len: int = 48, tiling: Tiling = FAST,
            programs: int = 1, keep_hidden: bool = False) -> Harness:
    torch.manual_seed(0)
    return Harness.build(cfg(name), programs, T, max_len, tiling=tiling, ranks=ranks,
                         keep_hidden=keep_hidden)

_needs_cuda = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(),
                                 reason="needs CUDA and TRITON_INTERPRET=0")


def gpu(fn):
    """A GPU test: marked `gpu` (selected by `pytest -m gpu`), skipped without CUDA."""
    return pytest.mark.gpu(_needs_cuda(fn))


def run_both(h: Harness, steps: int, sampling: bool = False, **kw) -> W.Buffers:
    """The VM on h.bufs and the kernel on a copy of them (its own cache): the kernel's buffers,
    after raising any error it recorded. On CUDA built as the backend builds it (registers
    capped so two programs fit per SM)."""
    b = h.bufs.clone()
    h.vm().run(steps)
    mk = Monokernel(h.plan, h.w)  # the backend's launch defaults
    mk.launch(b, steps, sampling=sampling, **kw)
    mk.check(b)
    return b


def spy_launches(monkeypatch) -> list[tuple[int, int, int]]:
    """(T, steps asked, steps run) of every Monokernel launch from now on (a test's fixture)."""
    seen: list[tuple[int, int, int]] = []
    orig = Monokernel.launch

    def spy(self, b, nsteps, **kw):
        s0 = int(b.state[W.STEPS])
        orig(self, b, nsteps, **kw)
        seen.append((self.plan.T, nsteps, int(b.state[W.STEPS]) - s0))

    monkeypatch.setattr(Monokernel, "launch", spy)
    return seen
