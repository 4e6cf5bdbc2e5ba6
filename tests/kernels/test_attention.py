from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    DEVICE,
    DTYPES,
    assert_close,
    gpu,
    interpreted,
    qkv_args,
    randn,
    rope_tables,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import attention as at
from agentfast.kernels import qkv_rope as qr

HEADS = [(4, 2, 64), (9, 3, 64), (8, 8, 128), (4, 2, 16), (6, 2, 32)]

pytestmark = interpreted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos", [0, 5, 37])
@pytest.mark.parametrize("nh,nkv,hd", HEADS)
def test_attention(nh, nkv, hd, pos, dtype):
    q = randn(nh, hd, dtype=dtype)
    kc, vc = randn(nkv, 64, hd, dtype=dtype), randn(nkv, 64, hd, dtype=dtype)
    p = torch.tensor([pos], dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    assert at.attention(q, kc, vc, p, out=out, num_splits=4, block_t=16) is out
    assert_close(out, at.attention_ref(q, kc, vc, p), dtype)


@pytest.mark.parametrize("pos,window,num_splits,block_t", [
    (0, None, 4, 32), (150, None, 8, 16), (150, 20, 4, 16), (199, 100, 16, 16), (199, 1, 2, 64),
    (63, 64, 3, 32), (100, 300, 1, 64), (199, None, 64, 16), (37, None, 5, 128),
])
def test_attention_splits_and_window(pos, window, num_splits, block_t):
    nh, nkv, hd = 4, 2, 64
    q = randn(nh, hd, dtype=torch.bfloat16, scale=2.0)
    kc, vc = randn(nkv, 200, hd, dtype=torch.bfloat16), randn(nkv, 200, hd, dtype=torch.bfloat16)
    p = torch.tensor([pos], dtype=torch.int32, device=DEVICE)
    out = at.attention(q, kc, vc, p, sliding_window=window, num_splits=num_splits,
                       block_t=block_t)
    assert_close(out, at.attention_ref(q, kc, vc, p, sliding_window=window), torch.bfloat16)


def test_workspace_reused_as_length_grows():
    """One workspace and fixed launch arguments for every step, like a replayed graph."""
    nh, nkv, hd, max_len = 4, 2, 64, 96
    kc, vc = randn(nkv, max_len, hd), randn(nkv, max_len, hd)
    ws = torch.full((at.workspace_size(nh, hd, max_len, 4),), float("nan"), device=DEVICE)
    p = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    out = torch.empty(nh, hd, device=DEVICE)
    for pos in (95, 3, 40):
        q = randn(nh, hd)
        p.fill_(pos)
        at.attention(q, kc, vc, p, out=out, workspace=ws, num_splits=4, block_t=16)
        assert_close(out, at.attention_ref(q, kc, vc, p), torch.float32)


def test_split_heuristic():
    for nkv in (1, 2, 3, 8):  # the default workspace fits every default split count
        for max_len in (1, 16, 100, 4096, 131072):
            s = at.pick_num_splits(nkv, max_len)
            assert at.workspace_size(8, 64, max_len) >= at.workspace_size(8, 64, max_len, s)
    assert at.pick_num_splits(8, 8192) == 16
    assert at.pick_num_splits(3, 8192) == 32
    assert at.pick_num_splits(2, 200) == 4  # no more splits than blocks of 64
    assert at.pick_num_splits(3, 64) == 1


def test_decode_chain():
    """qkv_rope then attention over three steps; the caches fill up as a decode would."""
    nh, nkv, hd, K = 9, 3, 64, 96
    cos, sin = rope_tables(32, hd)
    kc, vc = torch.zeros(nkv, 32, hd, device=DEVICE), torch.zeros(nkv, 32, hd, device=DEVICE)
    kr, vr = kc.clone(), vc.clone()
    p = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    for pos in range(3):
        p.fill_(pos)
        args = qkv_args(nh, nkv, hd, K, torch.float32, True, True, False)
        q = qr.qkv_rope(**args, cos=cos, sin=sin, pos=p, k_cache=kc, v_cache=vc)
        o = at.attention(q, kc, vc, p)
        q_ref = qr.qkv_rope_ref(**args, cos=cos, sin=sin, pos=p, k_cache=kr, v_cache=vr)
        assert_close(o, at.attention_ref(q_ref, kr, vr, p), torch.float32, tol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G,nkv,hd,C,first,window", [
    (3, 3, 64, 5, 37, None),  # SmolLM2's group, one block of rows
    (2, 2, 16, 40, 0, None),  # 80 rows: two blocks; the chunk at the start
    (4, 1, 128, 16, 100, None),
    (2, 2, 32, 24, 90, 7),  # sliding window: keys before it are skipped
])
def test_chunk_attention(G, nkv, hd, C, first, window, dtype):
    """The prefill's attention (q rows g * C + c at positions first + c) against masked
    softmax over the cache: causal, GQA, window; keys past first + C hold junk it must not
    read."""
    L = 160
    q = randn(nkv, G * C, hd, dtype=dtype)
    kc, vc = randn(nkv, L, hd, dtype=dtype), randn(nkv, L, hd, dtype=dtype)
    kc[:, first + C:] = float("nan")  # never read
    vc[:, first + C:] = float("nan")
    pos = torch.arange(first, first + C, device=DEVICE)
    out = at.chunk_attention(q, kc, vc, pos, sliding_window=window)
    qpos = (first + torch.arange(G * C) % C)[:, None]
    k = torch.arange(L)[None, :]
    ok = k <= qpos
    if window:
        ok &= k > qpos - window
    s = q.float() @ kc.float().nan_to_num().transpose(1, 2) / hd ** 0.5  # [nkv, R, L]
    p = torch.softmax(s.masked_fill(~ok.to(DEVICE), float("-inf")), dim=-1)
    assert_close(out, p @ vc.float().nan_to_num(), dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("nh,nkv,hd,L", [(9, 3, 64, 1024), (16, 8, 128, 4096)])
def test_gpu_bf16_attention_as_accurate_as_torch(nh, nkv, hd, L):
    """bf16 on the GPU, scores of real size (|score| 30-150: q/k with large norms, as q/k-normed
    heads give): the decode attention's error against fp64 is torch's bf16 SDPA's, not the
    5-10x more that pre-scaling q before its bf16 rounding gave (bench/results/
    monokernel-20261129-s8/attention_accuracy.txt)."""
    import math

    import torch.nn.functional as F

    for _ in range(4):
        q = (torch.randn(nh, hd, device="cuda") * 4).bfloat16()
        k = (torch.randn(nkv, L, hd, device="cuda") * 4).bfloat16()
        v = torch.randn(nkv, L, hd, device="cuda").bfloat16()
        pos = torch.tensor([L - 1], dtype=torch.int32, device="cuda")
        s = q.double().view(nkv, nh // nkv, hd) @ k.double().transpose(1, 2) / math.sqrt(hd)
        want = (torch.softmax(s, -1) @ v.double()).view(nh, hd)
        g = nh // nkv
        sdpa = F.scaled_dot_product_attention(q.view(1, nh, 1, hd), k.repeat_interleave(g, 0)[None],
                                              v.repeat_interleave(g, 0)[None])[0, :, 0]
        err = (at.attention(q, k, v, pos).double() - want).abs().max().item()
        ref = (sdpa.double() - want).abs().max().item()
        assert err <= 1.5 * ref + 1e-3, (err, ref)
