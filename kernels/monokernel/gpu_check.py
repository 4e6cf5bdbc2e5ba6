"""GPU check of the monokernel: correctness against the VM and the reference, then speed.

    python -m agentfast.kernels.monokernel.gpu_check [--quick] [--shapes smollm2-135m,qwen3-1.7b]

On a CUDA GPU, random weights at real shapes (SmolLM2-135M, Qwen3-1.7B):
1. fp32: kernel buffers == VM buffers after a few greedy steps (first divergence named if not),
   kernel tokens == VM tokens == reference greedy tokens; VM K/V and logits == the reference.
2. bf16: the same comparison with a loose tolerance, and how many tokens agree.
3. the backend path: pinned host ring streamed while the kernel runs, cancellation.
4. speed, bf16: time per step at T = 1 (tokens/s, TB/s of weights) and T = 4, 8, 16 relative
   to T = 1, for 1, 2, 4 programs per SM (those that cannot be resident are reported).
Prints a table; writes $OUT/monokernel_gpu_check.json when OUT is set. Every case is isolated:
an exception is recorded and the next case runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback

import torch

from agentfast.engine.config import ModelConfig

from . import weights as W
from .diff import compare, first_divergence, kernel_runner, reference_divergence, vm_runner
from .harness import Harness, random_state_dict
from .kernel import Monokernel
from .vm import VM

SHAPES = {
    "smollm2-135m": ModelConfig(arch="llama", vocab_size=49152, hidden_size=576,
                                intermediate_size=1536, num_layers=30, num_heads=9,
                                num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5,
                                rope_theta=100000.0, tie_word_embeddings=True),
    "qwen3-1.7b": ModelConfig(arch="qwen3", vocab_size=151936, hidden_size=2048,
                              intermediate_size=6144, num_layers=28, num_heads=16,
                              num_kv_heads=8, head_dim=128, rms_norm_eps=1e-6,
                              rope_theta=1000000.0, tie_word_embeddings=True, qk_norm=True),
}
COPY_TBPS = 4.27  # measured device copy bandwidth of the H200 (probes/baseline.json)


def _record(res: dict, key: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        res[key] = fn()
    except Exception as e:  # one case failing must not stop the others
        res[key] = {"error": f"{type(e).__name__}: {e}"[:600],
                    "where": traceback.format_exc().splitlines()[-3:]}
    if isinstance(res[key], dict):
        res[key]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{key}: {res[key]}", flush=True)


def _prompt(cfg: ModelConfig, n: int = 24) -> list[int]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist()


def correctness(cfg: ModelConfig, dtype: torch.dtype, programs: int, steps: int) -> dict:
    torch.manual_seed(0)
    h = Harness.build(cfg, programs, 1, 1024, device="cuda", dtype=dtype)
    mk = Monokernel(h.plan, h.w)
    fit = mk.resident_per_sm(h.bufs, sampling=False)
    if programs > fit * mk.fit_info["sms"]:  # fewer programs, as many as are resident
        h = h.replan(num_programs=fit * mk.fit_info["sms"])
        mk = Monokernel(h.plan, h.w)
        programs = h.plan.num_programs
    prompt = _prompt(cfg)
    ref, _ = h.reference_greedy(prompt, steps + 1)
    h.start(prompt, steps + 1)
    start = h.bufs.clone()
    b = start.clone()
    t0 = time.perf_counter()
    mk.launch(b, steps)
    torch.cuda.synchronize()
    kernel_s = time.perf_counter() - t0
    mk.check(b)
    vm_b = start.clone()
    VM(h.plan, h.w, [vm_b]).run(steps)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    out = {"programs": programs, "fit": mk.fit_info, "first_launch_s": round(kernel_s, 2),
           "kernel_tokens": h.tokens(b), "vm_tokens": h.tokens(vm_b), "ref_tokens": ref}
    d = compare(vm_b, b, tol)
    out["kernel_vs_vm"] = "equal" if d is None else f"{d[0]} differs by {d[1]:.3g}"
    if d is not None:
        div = first_divergence(h.plan, start, vm_runner(h.w), kernel_runner(h.w), 2, tol)
        out["first_divergence"] = str(div)
    agree = 0
    for a, r in zip(h.tokens(b), ref, strict=False):
        if a != r:
            break
        agree += 1
    out["tokens_agree_with_reference"] = f"{agree}/{len(ref)}"
    out["logits_max_abs_kernel_vs_vm"] = (b.logits - vm_b.logits).abs().max().item()
    if dtype == torch.float32:
        rd = reference_divergence(h, prompt, 3)
        out["vm_vs_reference"] = "equal" if rd is None else str(rd)
    out["ok"] = d is None and (dtype != torch.float32 or h.tokens(b) == ref)
    return out


def backend_path(cfg: ModelConfig, n: int) -> dict:
    """Streaming from the pinned ring while the kernel runs; cancellation; greedy == ref."""
    from agentfast.engine.backends.monokernel import MonokernelBackend
    from agentfast.engine.backends.reference import ReferenceBackend
    from agentfast.engine.sampling import SamplingParams

    dev = torch.device("cuda")
    sd = random_state_dict(cfg, dev, torch.float32, seed=0)
    ref = ReferenceBackend(cfg, sd, dev, torch.float32, 2048)
    mk = MonokernelBackend(cfg, sd, dev, torch.float32, 2048)
    prompt, p = _prompt(cfg), SamplingParams(max_tokens=n, ignore_eos=True)

    def run(backend, limit=None):
        cache = backend.new_cache()
        logits = backend.prefill(cache, prompt, 0)
        it = backend.decode(cache, logits, len(prompt), p, frozenset(), n)
        toks, stamps = [], []
        for tok in it:
            toks.append(tok)
            stamps.append(time.perf_counter())
            if limit and len(toks) >= limit:
                it.close()
                break
        return toks, stamps

    want, _ = run(ref)
    run(mk)  # compile
    got, stamps = run(mk)
    t0 = time.perf_counter()
    part, _ = run(mk, limit=5)
    cancel_s = time.perf_counter() - t0
    span = stamps[-1] - stamps[1]
    return {"greedy_equal": got == want, "tokens": len(got),
            # streamed: the 2nd token reached the host well before the last one
            "streamed": span > 0 and (stamps[len(stamps) // 2] - stamps[1]) > 0.2 * span,
            "decode_tok_s": round((len(got) - 1) / max(span, 1e-9), 1),
            "cancel_after_5_s": round(cancel_s, 4), "cancelled_tokens": len(part)}


def speed(cfg: ModelConfig, per_sm: list[int], Ts: list[int], steps: int) -> dict:
    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    base = Harness.build(cfg, sms, 1, 4096, device="cuda", dtype=torch.bfloat16, pin=True)
    prompt = _prompt(cfg, 32)
    wbytes = cfg.decode_weight_bytes(2)
    out: dict = {"weight_bytes": wbytes,
                 "roofline_tok_s": round(COPY_TBPS * 1e12 / wbytes, 1)}
    for k in per_sm:
        for T in Ts:
            key = f"{k}/SM T={T}"
            try:
                h = base.replan(num_programs=k * sms, T=T)
                mk = Monokernel(h.plan, h.w)
                h.start(prompt, 4000)
                mk.launch(h.bufs, 4)  # compile, residency check, warm-up: same int args
                torch.cuda.synchronize()
                mk.check(h.bufs)
                h.start(prompt, 4000)
                n = max(8, steps // T)
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                mk.launch(h.bufs, n)
                e1.record()
                e1.synchronize()
                mk.check(h.bufs)
                ran = int(h.bufs.state[W.STEPS])
                us = e0.elapsed_time(e1) * 1e3 / max(ran, 1)
                r = {"steps": ran, "step_us": round(us, 1), "registers": mk.fit_info.get(
                    "registers"), "fit_per_sm": mk.fit_info.get("programs_per_sm")}
                if T == 1:
                    r["tok_s"] = round(1e6 / us, 1)
                    r["TBps"] = round(wbytes / us / 1e6, 3)
                else:
                    t1 = out.get(f"{k}/SM T=1", {}).get("step_us")
                    r["vs_T1"] = round(us / t1, 3) if t1 else None
                out[key] = r
            except Exception as e:
                out[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
            print(f"  {key}: {out[key]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--quick", action="store_true", help="fewer steps and configurations")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "gpu_check needs a CUDA GPU"
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "unset TRITON_INTERPRET"
    import triton

    dev = torch.cuda.get_device_properties(0)
    res: dict = {"device": dev.name, "sms": dev.multi_processor_count,
                 "torch": torch.__version__, "triton": triton.__version__}
    sms = dev.multi_processor_count
    steps, per_sm, Ts = (64, [2], [1, 4]) if args.quick else (256, [1, 2, 4], [1, 4, 8, 16])
    for name in args.shapes.split(","):
        cfg = SHAPES[name]
        for dt in (torch.float32, torch.bfloat16):
            _record(res, f"{name} correctness {str(dt)[6:]}",
                    lambda cfg=cfg, dt=dt: correctness(cfg, dt, 2 * sms, 6))
            torch.cuda.empty_cache()
        if name == "smollm2-135m":
            _record(res, f"{name} backend", lambda cfg=cfg: backend_path(cfg, 200))
        _record(res, f"{name} speed", lambda cfg=cfg: speed(cfg, per_sm, Ts, steps))
        torch.cuda.empty_cache()
    print("\nshape          progs/SM  T   step_us   tok/s    TB/s   vs T=1  regs")
    for name in args.shapes.split(","):
        sp = res.get(f"{name} speed", {})
        for key, r in sp.items():
            if "/SM" in key and "step_us" in r:
                k, T = key.split("/SM T=")
                print(f"{name:14s} {k:>8s} {T:>2s} {r['step_us']:9.1f} {r.get('tok_s', ''):>7} "
                      f"{r.get('TBps', ''):>7} {r.get('vs_T1', ''):>7} {r.get('registers')}")
            elif "/SM" in key:
                print(f"{name:14s} {key:>11s}: {r.get('error')}")
        if "roofline_tok_s" in sp:
            print(f"{name:14s} roofline {sp['roofline_tok_s']} tok/s at {COPY_TBPS} TB/s")
    out_dir = os.environ.get("OUT")
    if out_dir:
        path = os.path.join(out_dir, "monokernel_gpu_check.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1, default=str)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
