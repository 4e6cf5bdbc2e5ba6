"""Batch-1 matrix-vector product y[N] = W[N, K] @ x[K], streaming W at memory bandwidth.

One kernel, options as constexpr flags: bias; fused residual (y = residual + W @ x, in place into
the residual); fused input RMSNorm (every program computes sum(x^2) in its one pass over x and
scales its outputs by the rstd: W @ (x * rstd * w) = rstd * (W @ (x * w)); unlike the unfused path,
the normalized x is not rounded to x's dtype);
gate/up + SiLU (h = silu(Wg @ x) * (Wu @ x), Wg and Wu passed separately: two [I, K] tensors,
which may be the two halves of one concatenated [2I, K] weight); per-program max/argmax of y
(the first stage of a greedy LM head). Layout: each program owns BLOCK_N whole rows and walks K
in BLOCK_K steps (no split-K), fp32 accumulation, 16-byte loads along K. Knows nothing about
layers; W must be row-major contiguous ([out, in] like nn.Linear).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NUM_SMS_DEFAULT = 132  # H200


@triton.jit
def _tile(w_ptr, rows, cols, x, N, K: tl.constexpr, EVEN_K: tl.constexpr):
    # products W[rows, cols] * x[cols], fp32 [BLOCK_N, BLOCK_K]; summed over K after the loop
    ptrs = w_ptr + rows[:, None] * K + cols[None, :]
    if EVEN_K:
        w = tl.load(ptrs, mask=rows[:, None] < N, other=0.0, eviction_policy="evict_first")
    else:
        m = (rows[:, None] < N) & (cols[None, :] < K)
        w = tl.load(ptrs, mask=m, other=0.0, eviction_policy="evict_first")
    return w.to(tl.float32) * x[None, :]


@triton.jit
def _step(w_ptr, wu_ptr, x_ptr, nw_ptr, rows, k0, acc, acc_u, ss, N, K: tl.constexpr,
          HAS_NORM: tl.constexpr, GATED: tl.constexpr, EVEN_K: tl.constexpr,
          BLOCK_K: tl.constexpr):
    # one K step; with HAS_NORM, x * norm_weight goes in and sum(x^2) is gathered on the way
    # (rstd is a common factor of every output, applied after the loop: one pass over x)
    cols = k0 + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)  # [BLOCK_K]
    if HAS_NORM:
        ss += x * x
        x = x * tl.load(nw_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
    acc += _tile(w_ptr, rows, cols, x, N, K, EVEN_K)
    if GATED:
        acc_u += _tile(wu_ptr, rows, cols, x, N, K, EVEN_K)
    return acc, acc_u, ss


@triton.jit
def _matvec_kernel(
    w_ptr, wu_ptr, x_ptr, b_ptr, nw_ptr, res_ptr, y_ptr, pmax_ptr, pidx_ptr, N, eps,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr,
    GATED: tl.constexpr, ARGMAX: tl.constexpr, EVEN_K: tl.constexpr, UNROLL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    rmask = rows < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)  # one reduction at the end, not per step
    acc_u = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    ss = tl.zeros((BLOCK_K,), tl.float32)
    if UNROLL:  # few K steps: unroll so all of a program's weight loads are in flight at once
        for k0 in tl.static_range(0, K, BLOCK_K):
            acc, acc_u, ss = _step(w_ptr, wu_ptr, x_ptr, nw_ptr, rows, k0, acc, acc_u, ss, N,
                                   K, HAS_NORM, GATED, EVEN_K, BLOCK_K)
    else:
        for k0 in range(0, K, BLOCK_K):
            acc, acc_u, ss = _step(w_ptr, wu_ptr, x_ptr, nw_ptr, rows, k0, acc, acc_u, ss, N,
                                   K, HAS_NORM, GATED, EVEN_K, BLOCK_K)
    y = tl.sum(acc, axis=1)  # [BLOCK_N]
    if HAS_NORM:
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
        y = y * rstd
    if HAS_BIAS:
        y += tl.load(b_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    if GATED:
        u = tl.sum(acc_u, axis=1)
        if HAS_NORM:
            u = u * rstd
        y = y * tl.sigmoid(y) * u  # silu(gate) * up
    if HAS_RES:
        y += tl.load(res_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    y = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rows, y, mask=rmask)
    if ARGMAX:  # this program's max of y and its first row index
        v = tl.where(rmask, y.to(tl.float32), float("-inf"))
        tl.store(pmax_ptr + pid, tl.max(v, axis=0))
        tl.store(pidx_ptr + pid, pid * BLOCK_N + tl.argmax(v, axis=0))


_NUM_SMS: dict[int, int] = {}


def min_programs(device: torch.device) -> int:
    """Programs a matvec launch should have: 64 per SM on CUDA; 1 elsewhere (the CPU
    interpreter runs programs one by one, so the fewest is fastest there)."""
    if device.type != "cuda":
        return 1
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _NUM_SMS:
        _NUM_SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return 64 * _NUM_SMS[idx]


def pick_blocks(N: int, K: int, min_progs: int = 64 * NUM_SMS_DEFAULT) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps). Measured on an H200 (tests/kernels/bench_kernels.py
    --sweep): one row per program is best up to ~10k rows (1.1-1.3x over 2-8 rows); only huge N
    (LM heads) wants more rows per program, keeping >= 64 programs per SM. K steps of 1024
    elements (512 when K > 4096), 4 warps."""
    block_k = min(triton.next_power_of_2(K), 512 if K > 4096 else 1024)
    block_n = 16
    while block_n > 1 and triton.cdiv(N, block_n) < min_progs:
        block_n //= 2
    return block_n, block_k, 4


def launch(
    w: torch.Tensor,
    x: torch.Tensor,
    out: torch.Tensor,
    *,
    w_up: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    partial: tuple[torch.Tensor, torch.Tensor] | None = None,
    blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """All options in one place; `partial` = (pmax fp32 [P], pidx int32 [P]) with P = programs
    (see `num_programs`). Public wrappers below are what callers use."""
    N, K = w.shape
    assert w.is_contiguous(), "W must be row-major contiguous [N, K]"
    assert x.shape == (K,) and x.is_contiguous(), f"x must be contiguous [{K}], got {x.shape}"
    assert out.shape == (N,) and out.is_contiguous(), f"out must be contiguous [{N}]"
    for name, t, shape in (("w_up", w_up, (N, K)), ("bias", bias, (N,)),
                           ("residual", residual, (N,)), ("norm_weight", norm_weight, (K,))):
        if t is not None:
            assert t.shape == shape and t.is_contiguous(), f"{name} must be contiguous {shape}"
            assert t.device == w.device, f"{name} is on {t.device}, W on {w.device}"
    if w_up is not None:
        assert w_up.dtype == w.dtype, "gate and up weights must share a dtype"
    assert x.device == out.device == w.device, "x, out and W must be on one device"
    bn, bk, nw = blocks or pick_blocks(N, K, min_programs(w.device))
    grid = (triton.cdiv(N, bn),)
    if partial is not None:
        pmax, pidx = partial
        assert pmax.shape == pidx.shape == grid, f"partial buffers must be {grid}"
        assert pmax.dtype == torch.float32 and pidx.dtype == torch.int32
    _matvec_kernel[grid](
        w, w_up if w_up is not None else w, x, bias if bias is not None else w,
        norm_weight if norm_weight is not None else x, residual if residual is not None else out,
        out, partial[0] if partial else out, partial[1] if partial else out, N, eps,
        K=K, HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        HAS_NORM=norm_weight is not None, GATED=w_up is not None, ARGMAX=partial is not None,
        EVEN_K=K % bk == 0, UNROLL=triton.cdiv(K, bk) <= 8, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw,
    )
    return out


def num_programs(N: int, K: int, device: torch.device) -> int:
    return triton.cdiv(N, pick_blocks(N, K, min_programs(device))[0])


def matvec(
    w: torch.Tensor,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """W [N, K] @ x [K] (+ bias [N]) (+ residual [N]) -> out [N]. With `norm_weight` [K], x is
    RMS-normalized first. With `residual` and no `out`, the result is written into `residual`."""
    if out is None:
        out = residual if residual is not None else torch.empty(w.shape[0], **_like(x))
    return launch(w, x, out, bias=bias, residual=residual, norm_weight=norm_weight, eps=eps)


def gate_up_silu(
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    x: torch.Tensor,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """silu(Wg [I, K] @ x [K]) * (Wu [I, K] @ x) -> out [I]; optional RMSNorm of x first."""
    out = torch.empty(w_gate.shape[0], **_like(x)) if out is None else out
    return launch(w_gate, x, out, w_up=w_up, norm_weight=norm_weight, eps=eps)


def _like(x: torch.Tensor) -> dict:
    return {"dtype": x.dtype, "device": x.device}


def _normed(x: torch.Tensor, norm_weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    if norm_weight is None:
        return x.float()
    v = x.float()
    v = v * torch.rsqrt(v.pow(2).mean() + eps) * norm_weight.float()
    return v.to(x.dtype).float()


def matvec_ref(
    w: torch.Tensor,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    y = w.float() @ _normed(x, norm_weight, eps)  # [N]
    if bias is not None:
        y = y + bias.float()
    if residual is not None:
        y = y + residual.float()
    if out is None:
        out = residual if residual is not None else torch.empty(w.shape[0], **_like(x))
    return out.copy_(y)


def gate_up_silu_ref(
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    x: torch.Tensor,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    xn = _normed(x, norm_weight, eps)
    h = torch.nn.functional.silu(w_gate.float() @ xn) * (w_up.float() @ xn)  # [I]
    out = torch.empty(w_gate.shape[0], **_like(x)) if out is None else out
    return out.copy_(h)
