"""Facts about the device measured at run time: copy bandwidth and the decode roofline.

Knows torch devices and timing; nothing about models beyond their byte counts.
"""

from __future__ import annotations

import torch


def measure_copy_bandwidth(device: torch.device | str = "cuda", nbytes: int = 1 << 30,
                           iters: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    device = torch.device(device)
    assert device.type == "cuda", "copy bandwidth is measured on a CUDA device"
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / iters
    return 2 * src.numel() / seconds


def roofline_tokens_per_s(weight_bytes: int, bandwidth: float) -> float:
    """Upper bound of batch-1 decode: every weight byte read once per token."""
    return bandwidth / weight_bytes
