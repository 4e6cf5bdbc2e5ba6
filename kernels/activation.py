"""SwiGLU's activation for rows of a fused gate/up projection: out = silu(gate) * up.

gu [R, 2I] holds [gate | up] per row (one GEMM over the concatenated weights); out [R, I] in
gu's dtype. Rounded as the unfused PyTorch expression F.silu(gate) * up rounds in a 16-bit
dtype: silu's result to the dtype, then the product. The decode kernels fuse this into their
gate/up matvec; this is for prefill rows (engine/backends/prefill.py). Knows nothing else.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, width, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < width
    g = tl.load(gu_ptr + r * 2 * width + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + r * 2 * width + width + cols, mask=m, other=0.0)
    s = (g / (1.0 + tl.exp(-g))).to(u.dtype)
    tl.store(out_ptr + r * width + cols, (s.to(tl.float32) * u.to(tl.float32)).to(u.dtype), mask=m)


def silu_mul(gu: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """gu [R, 2I] -> silu(gu[:, :I]) * gu[:, I:] as [R, I]."""
    assert gu.dim() == 2 and gu.shape[1] % 2 == 0 and gu.is_contiguous(), "gu [R, 2I] contiguous"
    rows, width = gu.shape[0], gu.shape[1] // 2
    out = torch.empty(rows, width, dtype=gu.dtype, device=gu.device) if out is None else out
    assert out.shape == (rows, width) and out.is_contiguous() and out.dtype == gu.dtype, (
        "out [R, I]")
    block = min(1024, triton.next_power_of_2(width))
    _silu_mul_kernel[(rows, triton.cdiv(width, block))](gu, out, width, BLOCK=block,
                                                          num_warps=4)
    return out
