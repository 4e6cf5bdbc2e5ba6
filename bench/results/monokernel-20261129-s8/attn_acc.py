"""bf16 decode attention error against fp64, q pre-scaled (old kernel) vs scaled after the dot
(new), and torch's bf16 sdpa; scores of realistic size (q / k with large norms, as q/k-normed
Qwen3 heads give). The old kernel: `git show 92c179d:kernels/attention.py > /tmp/attention_old.py`,
then OLD_ATTENTION=/tmp/attention_old.py python attn_acc.py (as run: .devrun/attention_old.py)."""
import importlib.util
import math
import os

import torch
import torch.nn.functional as F

from agentfast.kernels import attention as new

spec = importlib.util.spec_from_file_location("attention_old", os.environ.get("OLD_ATTENTION", ".devrun/attention_old.py"))
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
torch.manual_seed(0)
dev = "cuda"
for nh, nkv, hd, L, qs in [(9, 3, 64, 1024, 3.0), (16, 8, 128, 1024, 4.0), (32, 8, 64, 4096, 3.0),
                           (16, 8, 128, 4096, 6.0)]:
    errs = {"old": [], "new": [], "sdpa": []}
    for rep in range(8):
        q = (torch.randn(nh, hd, device=dev) * qs).bfloat16()
        k = (torch.randn(nkv, L, hd, device=dev) * qs).bfloat16()
        v = torch.randn(nkv, L, hd, device=dev).bfloat16()
        pos = torch.tensor([L - 1], dtype=torch.int32, device=dev)
        s64 = (q.double().view(nkv, nh // nkv, hd) @ k.double().transpose(1, 2)) / math.sqrt(hd)
        want = (torch.softmax(s64, -1) @ v.double()).view(nh, hd)
        smax = s64.abs().max().item()
        errs["old"].append((old.attention(q, k, v, pos).double() - want).abs().max().item())
        errs["new"].append((new.attention(q, k, v, pos).double() - want).abs().max().item())
        kk = k.repeat_interleave(nh // nkv, 0)[None]
        vv = v.repeat_interleave(nh // nkv, 0)[None]
        o = F.scaled_dot_product_attention(q.view(1, nh, 1, hd), kk, vv)[0, :, 0]
        errs["sdpa"].append((o.double() - want).abs().max().item())
    print(f"nh {nh} nkv {nkv} hd {hd} L {L} max|score| {smax:.1f}: max err " +
          "  ".join(f"{k} {max(v):.4f} (mean {sum(v)/len(v):.4f})" for k, v in errs.items()), flush=True)
