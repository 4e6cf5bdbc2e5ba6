"""bf16 test_gpu_kernel_drafts_on_the_device_equals_vm: tokens of kernel / VM / reference and the
first differing buffer, with the kernels/monokernel/ops_attn.py in the tree."""
import sys

import torch

sys.path.insert(0, "tests/monokernel"); sys.path.insert(0, "tests")
import test_mk_draft as t
from mk_utils import PROMPT, cfg, run_both

from agentfast.kernels.monokernel.diff import compare
from agentfast.kernels.monokernel.harness import Harness
from agentfast.spec_decode import NgramDrafter

for seed in (0, 1, 2):
    torch.manual_seed(seed)
    T, n = 4, 12
    h = Harness.build(cfg("qwen3_qknorm_hd128"), 264, T, 64, device="cuda", dtype=torch.bfloat16)
    ref, _ = h.reference_greedy(PROMPT, n + T)
    first = h.start(PROMPT, n)
    t._start_drafting(h, first, ref + [first], NgramDrafter(), T - 1)
    b = run_both(h, n)
    print(sys.argv[1], "seed", seed, "compare", compare(h.bufs, b, tol=3e-2, skip=("lm_idx",)),
          "kernel", h.tokens(b), "vm", h.tokens(), "ref", ref[:n])
