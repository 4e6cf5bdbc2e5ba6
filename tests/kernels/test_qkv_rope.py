from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    DEVICE,
    DTYPES,
    assert_close,
    interpreted,
    qkv_args,
    rand_weight,
    randn,
    rope_tables,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import qkv_rope as qr

MAX_LEN = 48

pytestmark = interpreted


CASES = [  # nh, nkv, hd, K, bias, input norm, qk norm
    (4, 2, 64, 96, True, False, False),  # Qwen2-like (bias)
    (9, 3, 64, 576, False, True, False),  # SmolLM2 shape, fused input norm
    (8, 8, 128, 64, False, False, True),  # Qwen3-like (q/k norm), MHA
    (4, 2, 128, 96, True, True, True),
    (4, 2, 16, 64, True, True, True),  # tiny test models
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos", [0, 5, 37])
@pytest.mark.parametrize("nh,nkv,hd,K,bias,norm,qk_norm", CASES)
def test_qkv_rope(nh, nkv, hd, K, bias, norm, qk_norm, pos, dtype):
    args = qkv_args(nh, nkv, hd, K, dtype, bias, norm, qk_norm)
    cos, sin = rope_tables(64, hd)
    p = torch.tensor([pos], dtype=torch.int32, device=DEVICE)
    kc = randn(nkv, MAX_LEN, hd, dtype=dtype)
    vc = randn(nkv, MAX_LEN, hd, dtype=dtype)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    q = torch.empty(nh, hd, dtype=dtype, device=DEVICE)
    assert qr.qkv_rope(**args, cos=cos, sin=sin, pos=p, k_cache=kc, v_cache=vc, out=q) is q
    q_ref = qr.qkv_rope_ref(**args, cos=cos, sin=sin, pos=p, k_cache=kc_ref, v_cache=vc_ref)
    assert_close(q, q_ref, dtype)
    assert_close(kc[:, pos], kc_ref[:, pos], dtype)
    assert_close(vc[:, pos], vc_ref[:, pos], dtype)
    others = torch.arange(MAX_LEN) != pos
    assert torch.equal(kc[:, others], kc_ref[:, others]), "wrote outside position pos"
    assert torch.equal(vc[:, others], vc_ref[:, others]), "wrote outside position pos"


def test_cache_view_of_all_layers():
    """Per-layer slices of a [layers, nkv, max_len, hd] cache, and pos past max_len is dropped."""
    nh, nkv, hd, K = 4, 2, 64, 64
    args = qkv_args(nh, nkv, hd, K, torch.float32, False, False, False)
    cos, sin = rope_tables(64, hd)
    cache = torch.zeros(3, 2, nkv, 8, hd, device=DEVICE)  # [layers, k/v, nkv, max_len, hd]
    p = torch.tensor([3], dtype=torch.int32, device=DEVICE)
    qr.qkv_rope(**args, cos=cos, sin=sin, pos=p, k_cache=cache[1, 0], v_cache=cache[1, 1])
    ref = torch.zeros_like(cache)
    qr.qkv_rope_ref(**args, cos=cos, sin=sin, pos=p, k_cache=ref[1, 0], v_cache=ref[1, 1])
    assert_close(cache, ref, torch.float32)
    p.fill_(8)  # == max_len: nothing may be written
    before = cache.clone()
    qr.qkv_rope(**args, cos=cos, sin=sin, pos=p, k_cache=cache[1, 0], v_cache=cache[1, 1])
    assert torch.equal(cache, before)


def test_rope_matches_hf_rotate_half():
    """RoPE of q at pos equals HF apply_rotary_pos_emb written out by hand."""
    nh, nkv, hd, K = 4, 2, 64, 64
    args = qkv_args(nh, nkv, hd, K, torch.float32, False, False, False)
    cos, sin = rope_tables(64, hd)
    kc = torch.zeros(nkv, 16, hd, device=DEVICE)
    vc = torch.zeros_like(kc)
    q = qr.qkv_rope(**args, cos=cos, sin=sin, pos=torch.tensor([7], dtype=torch.int32,
                    device=DEVICE), k_cache=kc, v_cache=vc)
    raw = (args["w_qkv"] @ args["x"])[: nh * hd].view(nh, hd)
    x1, x2 = raw[:, : hd // 2], raw[:, hd // 2:]
    hf = raw * cos[7] + torch.cat((-x2, x1), dim=-1) * sin[7]
    assert_close(q, hf, torch.float32, tol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nh,nkv,hd,qk_norm", [(4, 2, 64, False), (9, 3, 64, False),
                                               (4, 1, 128, True), (4, 2, 16, True)])
def test_rope_append_rows(nh, nkv, hd, qk_norm, dtype):
    """C = 5 positions from 11 (the prefill's rows): q out grouped by kv head [nkv, G * C,
    hd], k and v at their positions, nothing else written; against per-row torch math."""
    C, G, start = 5, nh // nkv, 11
    cos, sin = rope_tables(64, hd)
    qkv = randn(C, (nh + 2 * nkv) * hd, dtype=dtype)
    qn = rand_weight(hd) if qk_norm else None
    kn = rand_weight(hd) if qk_norm else None
    pos = torch.arange(start, start + C, device=DEVICE)
    kc, vc = randn(nkv, MAX_LEN, hd, dtype=dtype), randn(nkv, MAX_LEN, hd, dtype=dtype)
    kc0, vc0 = kc.clone(), vc.clone()
    q = qr.rope_append_rows(qkv, qn, kn, cos, sin, pos, kc, vc, eps=1e-6)
    t = qkv.float().view(C, nh + 2 * nkv, hd)
    qh, kh, vh = t[:, :nh], t[:, nh:nh + nkv], t[:, nh + nkv:]
    if qk_norm:
        qh, kh = qr._rms(qh, qn, 1e-6), qr._rms(kh, kn, 1e-6)
    c, s = cos[pos][:, None], sin[pos][:, None]
    qh, kh = qh * c + qr._rotate_half(qh) * s, kh * c + qr._rotate_half(kh) * s
    want_q = qh.view(C, nkv, G, hd).permute(1, 2, 0, 3).reshape(nkv, G * C, hd)
    assert_close(q, want_q, dtype)
    assert_close(kc[:, start:start + C], kh.transpose(0, 1), dtype)
    assert_close(vc[:, start:start + C], vh.transpose(0, 1), dtype)
    others = (torch.arange(MAX_LEN) < start) | (torch.arange(MAX_LEN) >= start + C)
    assert torch.equal(kc[:, others], kc0[:, others]), "wrote outside the positions"
    assert torch.equal(vc[:, others], vc0[:, others]), "wrote outside the positions"
