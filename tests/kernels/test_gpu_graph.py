"""A whole one-layer decode step of the kernels, captured in one CUDA graph and replayed.

The step: embedding of the last token, input RMSNorm + QKV + q/k norm + RoPE + KV append,
attention, O-proj + residual, RMSNorm + gate/up + SiLU, down-proj + residual, final norm + LM
head + argmax, sampling, pos += 1. Replays must equal the same kernels run eagerly, bit for bit,
and the first step must match the PyTorch references.
"""

from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    assert_close,
    gpu,
    rand_weight,
    randn,
    rope_tables,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import attention as at
from agentfast.kernels import lm_head as lh
from agentfast.kernels import matvec as mv
from agentfast.kernels import qkv_rope as qr

H, NH, NKV, HD, INTER, V, MAX_LEN, EPS = 256, 4, 2, 64, 512, 1000, 64, 1e-6
BF = torch.bfloat16


def make_model():
    rows = (NH + 2 * NKV) * HD
    return dict(
        emb=randn(V, H, dtype=BF), ln1=rand_weight(H, dtype=BF), ln2=rand_weight(H, dtype=BF),
        lnf=rand_weight(H, dtype=BF), wqkv=randn(rows, H, dtype=BF, scale=0.06),
        bqkv=randn(rows, dtype=BF, scale=0.1), qn=rand_weight(HD, dtype=BF),
        kn=rand_weight(HD, dtype=BF), wo=randn(H, NH * HD, dtype=BF, scale=0.06),
        wg=randn(INTER, H, dtype=BF, scale=0.06), wu=randn(INTER, H, dtype=BF, scale=0.06),
        wd=randn(H, INTER, dtype=BF, scale=0.04), wlm=randn(V, H, dtype=BF, scale=0.06),
    )


def make_state():
    dev = "cuda"
    P = mv.num_programs(V, H, torch.device(dev))
    cos, sin = rope_tables(MAX_LEN, HD)
    return dict(
        cos=cos, sin=sin,
        tok=torch.tensor([7], dtype=torch.int32, device=dev),
        tok_s=torch.zeros(1, dtype=torch.int32, device=dev),
        pos=torch.zeros(1, dtype=torch.int32, device=dev),
        hidden=torch.zeros(H, dtype=BF, device=dev),
        kc=torch.zeros(NKV, MAX_LEN, HD, dtype=BF, device=dev),
        vc=torch.zeros(NKV, MAX_LEN, HD, dtype=BF, device=dev),
        q=torch.empty(NH, HD, dtype=BF, device=dev),
        attn=torch.empty(NH, HD, dtype=BF, device=dev),
        h=torch.empty(INTER, dtype=BF, device=dev),
        logits=torch.empty(V, device=dev),
        qkv_ws=torch.empty((NH + 2 * NKV) * HD, device=dev),
        attn_ws=torch.empty(at.workspace_size(NH, HD, MAX_LEN, 4), device=dev),
        am_ws=(torch.empty(P, device=dev), torch.empty(P, dtype=torch.int32, device=dev)),
        temp=torch.tensor([0.8], device=dev), top_k=torch.tensor([50], dtype=torch.int32,
                                                                 device=dev),
        top_p=torch.tensor([0.9], device=dev), seed=torch.tensor([5], device=dev),
        offset=torch.zeros(1, dtype=torch.int64, device=dev),
    )


def step(m, s):
    s["hidden"].copy_(m["emb"].index_select(0, s["tok"].long())[0])  # [H]
    qr.qkv_rope(s["hidden"], m["wqkv"], m["bqkv"], m["ln1"], m["qn"], m["kn"], s["cos"],
                s["sin"], s["pos"], s["kc"], s["vc"], EPS, out=s["q"], workspace=s["qkv_ws"])
    at.attention(s["q"], s["kc"], s["vc"], s["pos"], out=s["attn"], workspace=s["attn_ws"],
                 num_splits=4, block_t=16)
    mv.matvec(m["wo"], s["attn"].view(-1), residual=s["hidden"])
    mv.gate_up_silu(m["wg"], m["wu"], s["hidden"], norm_weight=m["ln2"], eps=EPS, out=s["h"])
    mv.matvec(m["wd"], s["h"], residual=s["hidden"])
    lh.lm_head_argmax(s["hidden"], m["lnf"], m["wlm"], EPS, out=s["tok"], logits=s["logits"],
                      workspace=s["am_ws"])
    lh.sample(s["logits"], s["temp"], s["top_k"], s["top_p"], s["seed"], s["offset"],
              out=s["tok_s"])
    s["pos"].add_(1)


def ref_logits(m, tok: int):
    """Step 0 in the PyTorch references."""
    dev = "cuda"
    cos, sin = rope_tables(MAX_LEN, HD)
    pos = torch.zeros(1, dtype=torch.int32, device=dev)
    kc = torch.zeros(NKV, MAX_LEN, HD, dtype=BF, device=dev)
    vc = torch.zeros_like(kc)
    x = m["emb"][tok].clone()
    q = qr.qkv_rope_ref(x, m["wqkv"], m["bqkv"], m["ln1"], m["qn"], m["kn"], cos, sin, pos, kc,
                        vc, EPS)
    a = at.attention_ref(q, kc, vc, pos)
    mv.matvec_ref(m["wo"], a.view(-1), residual=x)
    h = mv.gate_up_silu_ref(m["wg"], m["wu"], x, norm_weight=m["ln2"], eps=EPS)
    mv.matvec_ref(m["wd"], h, residual=x)
    return lh.lm_head_ref(x, m["lnf"], m["wlm"], EPS)


@gpu
@pytest.mark.gpu
def test_graph_replay_matches_eager():
    m = make_model()
    s = make_state()
    step(m, s)  # compiles every kernel outside the capture
    assert_close(s["logits"], ref_logits(m, 7), BF, tol=3e-2)
    steps = 12
    eager = make_state()
    toks, samples = [], []
    for _ in range(steps):
        step(m, eager)
        toks.append(int(eager["tok"]))
        samples.append(int(eager["tok_s"]))
    s = make_state()
    g = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step(m, make_state())  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(g):
        step(m, s)
    for i in range(steps):
        g.replay()
        assert int(s["tok"]) == toks[i], f"greedy token differs at step {i}"
        assert int(s["tok_s"]) == samples[i], f"sampled token differs at step {i}"
    assert int(s["pos"]) == steps and int(s["offset"]) == steps
    assert torch.equal(s["kc"], eager["kc"]) and torch.equal(s["vc"], eager["vc"])
    assert torch.equal(s["logits"], eager["logits"])
