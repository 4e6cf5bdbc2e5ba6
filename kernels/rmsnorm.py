"""RMSNorm and fused residual-add + RMSNorm for decode.

y = x / sqrt(mean(x^2) + eps) * w, fp32 math, output in x's dtype. `add_rmsnorm` first does
residual += x (rounded to the residual's dtype, as an unfused model would) and normalizes the new
residual. One program per row; a row (hidden size up to 16k) fits in one block, so there is no
loop. Knows nothing about layers or models; no allocation in the launchers when `out=` is given.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, H, eps,
    HAS_RES: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < H
    x = tl.load(x_ptr + row * H + cols, mask=mask, other=0.0)  # [BLOCK]
    if HAS_RES:
        r = tl.load(res_ptr + row * H + cols, mask=mask, other=0.0)
        r = (r.to(tl.float32) + x.to(tl.float32)).to(r.dtype)  # rounded like the unfused add
        tl.store(res_ptr + row * H + cols, r, mask=mask)
        v = r.to(tl.float32)
    else:
        v = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(v * v, axis=0) / H + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * H + cols, (v * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> int:
    H = x.shape[-1]
    assert x.is_contiguous(), "x must be contiguous"
    assert weight.shape == (H,) and weight.is_contiguous(), f"weight must be [{H}] contiguous"
    assert out.shape == x.shape and out.is_contiguous(), "out must match x and be contiguous"
    assert out.dtype == x.dtype, f"out dtype {out.dtype} != x dtype {x.dtype}"
    assert x.device == weight.device == out.device, "tensors on different devices"
    return H


def _launch(x, res, weight, eps, out):
    H = x.shape[-1]
    rows = x.numel() // H
    block = triton.next_power_of_2(H)
    nw = 4 if block <= 2048 else (8 if block <= 8192 else 16)
    _rmsnorm_kernel[(rows,)](
        x, res if res is not None else x, weight, out, H, eps,
        HAS_RES=res is not None, BLOCK=block, num_warps=nw,
    )
    return out


def rmsnorm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., H], weight [H] -> out [..., H] (x's dtype)."""
    out = torch.empty_like(x) if out is None else out
    _check(x, weight, out)
    return _launch(x, None, weight, eps, out)


def add_rmsnorm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """residual [..., H] += x [..., H] in place; returns out = rmsnorm(residual) [..., H]."""
    out = torch.empty_like(x) if out is None else out
    _check(x, weight, out)
    assert residual.shape == x.shape and residual.is_contiguous(), "residual must match x"
    assert residual.dtype == x.dtype, "residual and x must share a dtype"
    return _launch(x, residual, weight, eps, out)


def rmsnorm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    v = x.float()
    y = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    if out is None:
        return y.to(x.dtype)
    return out.copy_(y)


def add_rmsnorm_ref(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    residual.copy_((residual.float() + x.float()).to(residual.dtype))
    return rmsnorm_ref(residual, weight, eps, out)
