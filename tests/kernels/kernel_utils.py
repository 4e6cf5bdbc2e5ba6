"""Shared helpers of the kernel tests: interpreter setup, device choice, tolerances, markers.

Kernel tests run the real Triton kernels on CPU through the interpreter (TRITON_INTERPRET=1). The
flag is read when `@triton.jit` runs, so it is set here, and every test module imports this file
before any kernel module; kernel modules imported earlier (by other tests) are reloaded. (This is
not a tests/kernels/conftest.py: a second module named `conftest` would shadow tests/conftest.py
for `from conftest import ...` in tests/test_models.py.) On a GPU machine run with
TRITON_INTERPRET=0 to test the compiled kernels and the `gpu` tests.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] == "1"
if INTERPRET:
    from triton.runtime.jit import JITFunction

    _mv = sys.modules.get("agentfast.kernels.matvec")
    if _mv is not None and isinstance(_mv._matvec_kernel, JITFunction):  # compiled earlier
        for _name in sorted(sys.modules):
            if _name.startswith("agentfast.kernels."):
                importlib.reload(sys.modules[_name])
DEVICE = "cuda" if not INTERPRET and torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16]

# The triton 3.6 interpreter (with numpy 2) cannot use runtime loop bounds; 3.9's can.
_OLD = tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 9)
interpreted = pytest.mark.skipif(
    INTERPRET and _OLD, reason=f"triton {triton.__version__} interpreter: needs >= 3.9"
)

gpu = pytest.mark.skipif(
    INTERPRET or not torch.cuda.is_available(), reason="needs CUDA and TRITON_INTERPRET=0"
)


@pytest.fixture(autouse=True)
def seeded():
    """Same random data whether a test runs alone or in the suite (import it to use it)."""
    torch.manual_seed(0)


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, tol: float = 0.0):
    """Max abs error within tol (default by dtype) times the reference's scale (>= 1)."""
    tol = tol or (2e-5 if dtype == torch.float32 else 2e-2)
    out, ref = out.float().cpu(), ref.float().cpu()
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape}"
    assert torch.isfinite(out).all(), "non-finite output"
    scale = max(ref.abs().max().item(), 1.0)
    err = (out - ref).abs().max().item()
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol:.1g} x scale {scale:.3g}"


def randn(*shape: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).to(dtype).to(DEVICE)


def rand_weight(*shape: int, dtype=torch.float32) -> torch.Tensor:
    """Positive norm-like weights around 1."""
    return (torch.rand(*shape) + 0.5).to(dtype).to(DEVICE)


def rope_tables(max_pos: int, head_dim: int, theta: float = 10000.0):
    """HF default RoPE: inv_freq duplicated, cos/sin [max_pos, head_dim] fp32."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    f = torch.outer(torch.arange(max_pos).float(), inv)
    e = torch.cat([f, f], dim=-1)
    return e.cos().contiguous().to(DEVICE), e.sin().contiguous().to(DEVICE)


def qkv_args(nh, nkv, hd, K, dtype, bias, norm, qk_norm):
    """Weights of one attention input block, as keyword arguments of qkv_rope."""
    rows = (nh + 2 * nkv) * hd
    return dict(
        x=randn(K, dtype=dtype),
        w_qkv=randn(rows, K, dtype=dtype, scale=0.1),
        bias=randn(rows, dtype=dtype) if bias else None,
        norm_weight=rand_weight(K, dtype=dtype) if norm else None,
        q_norm_weight=rand_weight(hd, dtype=dtype) if qk_norm else None,
        k_norm_weight=rand_weight(hd, dtype=dtype) if qk_norm else None,
    )
