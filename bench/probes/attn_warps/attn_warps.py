"""Offline probe (CPU, triton 3.6 for sm_90): does splitting a T = 1 attention block's keys
over the warps cut the block's CTA barriers? The monokernel's one-position attention computes a
block of keys as [16 query rows (the group's heads, padded), keys] x [keys, head_dim] tl.dots:
mma v2 puts the 4 warps along the keys, so the softmax's max and sum over keys cross warps. As a
batched [4, 16, keys / 4] dot, Triton puts the warps on the batch (warpsPerCTA [4, 1, 1]): each
warp runs the online softmax over its own quarter, merged once at the end. Counts PTX
instructions for one block and per extra block (a loop of 3 blocks minus one, halved).

Usage: python bench/probes/attn_warps/attn_warps.py HEAD_DIM KEYS_PER_BLOCK

Session 28, head_dim 64, 64-key blocks (Llama-3.2-1B, SmolLM2 at T = 1): bar.sync per extra
block 10.5 -> 6, but 12 -> 18 for a single block (the merge across warps). At ctx 1024 a Llama
split is one block, so nothing to gain there; at head_dim 128 a 32-key block leaves 8 keys a
warp, below tl.dot's K >= 16.
"""

import os
import re
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402


@triton.jit
def blocks_2d(q_ptr, k_ptr, v_ptr, o_ptr, n, BT: tl.constexpr, HD: tl.constexpr,
              M: tl.constexpr, NB: tl.constexpr):
    """The monokernel's form: one [M, BT] score tile per block."""
    r = tl.arange(0, M)
    d = tl.arange(0, HD)
    kk = tl.arange(0, BT)
    q = tl.load(q_ptr + r[:, None] * HD + d[None, :])
    m_i = tl.full((M,), float("-inf"), tl.float32)
    l_i = tl.zeros((M,), tl.float32)
    acc = tl.zeros((M, HD), tl.float32)
    for b in tl.static_range(NB):
        key = b * BT + kk[:, None]
        kb = tl.load(k_ptr + key * HD + d[None, :], mask=key < n, other=0.0)
        vb = tl.load(v_ptr + key * HD + d[None, :], mask=key < n, other=0.0)
        s = tl.dot(q, tl.trans(kb))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), vb)
        m_i = m_new
    tl.store(o_ptr + r[:, None] * HD + d[None, :], acc / l_i[:, None])


@triton.jit
def blocks_3d(q_ptr, k_ptr, v_ptr, o_ptr, n, BT: tl.constexpr, HD: tl.constexpr,
              M: tl.constexpr, NB: tl.constexpr, W: tl.constexpr):
    """Each block's keys in W sub-blocks, one batch of the dots each (a warp each)."""
    SB: tl.constexpr = BT // W
    r = tl.arange(0, M)
    d = tl.arange(0, HD)
    w = tl.arange(0, W)
    kk = tl.arange(0, SB)
    q = tl.load(q_ptr + r[:, None] * HD + d[None, :])
    q3 = tl.broadcast_to(q[None, :, :], (W, M, HD))
    m_i = tl.full((W, M), float("-inf"), tl.float32)
    l_i = tl.zeros((W, M), tl.float32)
    acc = tl.zeros((W, M, HD), tl.float32)
    for b in tl.static_range(NB):
        key = b * BT + w[:, None, None] * SB + kk[None, :, None]
        kb = tl.load(k_ptr + key * HD + d[None, None, :], mask=key < n, other=0.0)
        vb = tl.load(v_ptr + key * HD + d[None, None, :], mask=key < n, other=0.0)
        s = tl.dot(q3, tl.trans(kb, 0, 2, 1))  # [W, M, SB]
        m_new = tl.maximum(m_i, tl.max(s, axis=2))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, :, None])
        l_i = l_i * alpha + tl.sum(p, axis=2)
        acc = acc * alpha[:, :, None] + tl.dot(p.to(tl.bfloat16), vb)
        m_i = m_new
    mm = tl.max(m_i, axis=0)
    a = tl.exp2(m_i - mm[None, :])
    tot = tl.sum(l_i * a, axis=0)
    out = tl.sum(acc * a[:, :, None], axis=0)
    tl.store(o_ptr + r[:, None] * HD + d[None, :], out / tot[:, None])


def counts(fn, consts: dict) -> dict:
    sig = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "o_ptr": "*fp32", "n": "i32"}
    sig.update({k: "constexpr" for k in consts})
    k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
    ptx = k.asm["ptx"]
    return dict(bar=len(re.findall(r"bar\.sync|barrier\.sync", ptx)),
                shfl=len(re.findall(r"shfl", ptx)), mma=len(re.findall(r"mma\.sync", ptx)),
                st_shared=len(re.findall(r"st\.shared", ptx)),
                ld_shared=len(re.findall(r"ld\.shared", ptx)),
                instructions=sum(line.strip().endswith(";") for line in ptx.splitlines()))


def main() -> None:
    hd, bt = int(sys.argv[1]), int(sys.argv[2])
    for fn, extra in ((blocks_2d, {}), (blocks_3d, {"W": 4})):
        one = counts(fn, {"BT": bt, "HD": hd, "M": 16, "NB": 1, **extra})
        three = counts(fn, {"BT": bt, "HD": hd, "M": 16, "NB": 3, **extra})
        per = {k: (three[k] - one[k]) / 2 for k in one}
        print(f"{fn.__name__} head_dim {hd}, {bt} keys a block: one block {one}, "
              f"per extra block {per}", flush=True)


if __name__ == "__main__":
    main()
