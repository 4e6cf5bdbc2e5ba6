from __future__ import annotations

import pytest
import torch.nn.functional as F
from kernel_utils import DTYPES, assert_close, interpreted, randn

from agentfast.kernels.activation import silu_mul

pytestmark = interpreted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,width", [(1, 96), (5, 1536), (3, 2100)])
def test_silu_mul(rows, width, dtype):
    """silu(gate) * up over rows of [gate | up], as the unfused PyTorch expression (widths
    past one block of 1024 and not a multiple of it)."""
    gu = randn(rows, 2 * width, dtype=dtype, scale=3.0)
    out = silu_mul(gu)
    assert out.shape == (rows, width) and out.dtype == dtype
    assert_close(out, F.silu(gu[:, :width]) * gu[:, width:], dtype)
