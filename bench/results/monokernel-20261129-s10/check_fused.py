"""GPU: the fused MLP (Tiling.fuse_down) against the VM and the reference, fp32 and bf16."""
import sys, torch, dataclasses
from agentfast.kernels.monokernel.gpu_check import SHAPES, _prompt
from agentfast.kernels.monokernel.harness import Harness
from agentfast.kernels.monokernel.kernel import Monokernel
from agentfast.kernels.monokernel.vm import VM
from agentfast.kernels.monokernel.diff import compare
from agentfast.kernels.monokernel.plan import Tiling

sms = torch.cuda.get_device_properties(0).multi_processor_count
for name in sys.argv[1].split(","):
    cfg = SHAPES[name]
    for dt in (torch.float32, torch.bfloat16):
        for fuse in [bool(int(f)) for f in sys.argv[2].split(",")]:
            torch.manual_seed(0)
            h = Harness.build(cfg, 2 * sms, 1, 1024, device="cuda", dtype=dt,
                              tiling=Tiling(fuse_down=fuse))
            mk = Monokernel(h.plan, h.w)
            fit = mk.resident_per_sm(h.bufs, sampling=False)
            if 2 * sms > fit * sms:
                h = h.replan(num_programs=fit * sms); mk = Monokernel(h.plan, h.w)
            prompt = _prompt(cfg)
            n = 12
            ref, _ = h.reference_greedy(prompt, n + 1)
            h.start(prompt, n + 1)
            start = h.bufs.clone(); b = start.clone()
            mk.launch(b, n); torch.cuda.synchronize(); mk.check(b)
            vb = start.clone(); VM(h.plan, h.w, [vb]).run(n)
            tol = 1e-4 if dt == torch.float32 else 3e-2
            d = compare(vb, b, tol)
            agree = 0
            for a, r in zip(h.tokens(b), ref):
                if a != r:
                    break
                agree += 1
            print(f"{name} {str(dt)[6:]} fuse={int(fuse)} progs={h.plan.num_programs} "
                  f"kernel_vs_vm={'equal' if d is None else d} kernel==vm tokens {h.tokens(b) == h.tokens(vb)} "
                  f"kernel==ref {h.tokens(b) == ref} (first {agree} agree) logits maxabs "
                  f"{(b.logits - vb.logits).abs().max().item():.3g}", flush=True)
            del h, mk, b, vb, start
            torch.cuda.empty_cache()
