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

from agentfast.kernels import matvec as mv

SHAPES = [(N, K) for N in (1, 7, 99, 160) for K in (64, 96, 576)]

pytestmark = interpreted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", SHAPES)
def test_matvec_plain(N, K, dtype):
    w, x = randn(N, K, dtype=dtype, scale=0.1), randn(K, dtype=dtype)
    out = torch.empty(N, dtype=dtype, device=DEVICE)
    assert mv.matvec(w, x, out=out) is out
    assert_close(out, mv.matvec_ref(w, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 64), (99, 576), (160, 96)])
@pytest.mark.parametrize("bias,norm", [(True, False), (False, True), (True, True)])
def test_matvec_residual_bias_norm(N, K, dtype, bias, norm):
    w, x = randn(N, K, dtype=dtype, scale=0.1), randn(K, dtype=dtype)
    b = randn(N, dtype=dtype) if bias else None
    nw = rand_weight(K, dtype=dtype) if norm else None
    res = randn(N, dtype=dtype, scale=2.0)
    res_ref = res.clone()
    out = mv.matvec(w, x, bias=b, residual=res, norm_weight=nw)
    assert out is res  # written in place into the residual
    assert_close(res, mv.matvec_ref(w, x, bias=b, residual=res_ref, norm_weight=nw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 96), (7, 576), (160, 64)])
@pytest.mark.parametrize("norm", [False, True])
def test_gate_up_silu(N, K, dtype, norm):
    wg, wu = randn(N, K, dtype=dtype, scale=0.1), randn(N, K, dtype=dtype, scale=0.1)
    x = randn(K, dtype=dtype)
    nw = rand_weight(K, dtype=dtype) if norm else None
    out = mv.gate_up_silu(wg, wu, x, norm_weight=nw)
    assert_close(out, mv.gate_up_silu_ref(wg, wu, x, norm_weight=nw), dtype)


def test_gate_up_halves_of_one_weight():
    w = randn(2 * 99, 96, dtype=torch.bfloat16, scale=0.1)  # concatenated [gate; up]
    x = randn(96, dtype=torch.bfloat16)
    out = mv.gate_up_silu(w[:99], w[99:], x)
    assert_close(out, mv.gate_up_silu_ref(w[:99], w[99:], x), torch.bfloat16)


@pytest.mark.parametrize("blocks", [(1, 64, 1), (4, 256, 4), (16, 32, 2)])
def test_explicit_blocks(blocks):
    N, K = 37, 576  # K not a multiple of 256: the masked K path
    w, x, b = randn(N, K, scale=0.1), randn(K), randn(N)
    nw = rand_weight(K)
    out = torch.empty(N, device=DEVICE)
    mv.launch(w, x, out, bias=b, norm_weight=nw, blocks=blocks)
    assert_close(out, mv.matvec_ref(w, x, bias=b, norm_weight=nw), torch.float32)


def test_partial_argmax():
    N, K = 99, 64
    w, x = randn(N, K), randn(K)
    bn = 16
    P = (N + bn - 1) // bn
    pmax = torch.empty(P, device=DEVICE)
    pidx = torch.empty(P, dtype=torch.int32, device=DEVICE)
    y = torch.empty(N, device=DEVICE)
    mv.launch(w, x, y, partial=(pmax, pidx), blocks=(bn, 64, 4))
    ref = mv.matvec_ref(w, x)
    for p in range(P):
        seg = ref[p * bn:(p + 1) * bn]
        assert int(pidx[p]) == p * bn + int(seg.argmax())
        assert abs(float(pmax[p]) - float(seg.max())) < 1e-4


def test_pick_blocks():
    assert mv.pick_blocks(151936, 2048) == (16, 1024, 4)  # Qwen3 LM head
    assert mv.pick_blocks(49152, 576) == (4, 1024, 4)  # SmolLM2 LM head
    assert mv.pick_blocks(2048, 6144) == (1, 512, 4)  # Qwen3-1.7B down-proj
    assert mv.pick_blocks(1, 64) == (1, 64, 4)


def test_rejects_bad_shapes():
    w, x = randn(8, 64), randn(64)
    with pytest.raises(AssertionError):
        mv.matvec(w, randn(32))
    with pytest.raises(AssertionError):
        mv.matvec(w.t(), randn(8))  # not contiguous
    with pytest.raises(AssertionError):
        mv.matvec(w, x, bias=randn(4))
