from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    DEVICE,
    DTYPES,
    assert_close,
    interpreted,
    rand_weight,
    randn,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import rmsnorm as rn

pytestmark = interpreted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,H", [(1, 64), (1, 96), (1, 576), (3, 1000), (2, 7)])
def test_rmsnorm(rows, H, dtype):
    x, w = randn(rows, H, dtype=dtype, scale=3.0), rand_weight(H, dtype=dtype)
    out = torch.empty_like(x)
    assert rn.rmsnorm(x, w, 1e-6, out=out) is out
    assert_close(out, rn.rmsnorm_ref(x, w, 1e-6), dtype)
    assert_close(rn.rmsnorm(x[0], w, 1e-5), rn.rmsnorm_ref(x[0], w, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,H", [(1, 96), (1, 576), (2, 1000)])
def test_add_rmsnorm(rows, H, dtype):
    x, w = randn(rows, H, dtype=dtype), rand_weight(H, dtype=dtype)
    res = randn(rows, H, dtype=dtype, scale=4.0)
    res_ref = res.clone()
    out = rn.add_rmsnorm(x, res, w, 1e-6)
    ref = rn.add_rmsnorm_ref(x, res_ref, w, 1e-6)
    assert_close(res, res_ref, dtype)
    assert_close(out, ref, dtype)


def test_rmsnorm_rejects_bad_out():
    x, w = randn(1, 64), rand_weight(64)
    with pytest.raises(AssertionError):
        rn.rmsnorm(x, w, 1e-6, out=torch.empty(1, 64, dtype=torch.bfloat16, device=DEVICE))
    with pytest.raises(AssertionError):
        rn.rmsnorm(x, rand_weight(32), 1e-6)
