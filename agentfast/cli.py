"""The `agentfast` command: chat, generate, info, serve, bench, train-mtp.

Parses arguments, loads the model with a progress line, streams text to stdout. Every expected
failure is an AgentfastError printed as one line; nothing here knows about tensors.
"""

from __future__ import annotations

import argparse
import sys
import time

from agentfast.engine.errors import AgentfastError


def _progress(name: str):
    state = {"t0": time.perf_counter(), "last": 0.0}
    tty = sys.stderr.isatty()

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - state["last"] < 0.1:
            return
        state["last"] = now
        if tty:
            end = "\n" if done == total else ""
            print(f"\rloading {name}: {done}/{total} tensors", end=end, file=sys.stderr,
                  flush=True)
        elif done == total:
            print(f"loaded {name}: {total} tensors in {now - state['t0']:.1f}s", file=sys.stderr)

    return cb


def _engine(args):
    import torch

    from agentfast.engine import Engine
    from agentfast.engine.loaders import embedded_model_path, load_model

    name = args.model or f"{embedded_model_path().name} (embedded default)"
    loaded = load_model(args.model, progress=_progress(name))
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16,
             "fp16": torch.float16}[args.dtype]
    return Engine(loaded, backend=args.backend, device=args.device, dtype=dtype,
                  max_context=args.max_context, drafter=args.drafter)


def _params(args):
    from agentfast.engine import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                          stop=tuple(args.stop or ()))


def _stream(gen, stats: bool) -> None:
    for chunk in gen:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    r = gen.result
    sys.stdout.write("\n")
    if stats and r is not None:
        drafts = (f"{r.draft_steps} steps with drafts, {r.accepted_draft_tokens} of "
                  f"{r.draft_tokens} drafted tokens accepted; " if r.draft_steps else "")
        print(f"[{r.prompt_tokens} prompt tokens: {r.reused_tokens} reused, "
              f"{r.prefilled_tokens} prefilled; {len(r.token_ids)} generated, "
              f"{r.decode_tokens_per_s:.1f} tok/s, first token {r.ttft_s * 1e3:.0f} ms; "
              f"{drafts}finish: {r.finish_reason}]", file=sys.stderr)


def cmd_generate(args) -> None:
    eng = _engine(args)
    _stream(eng.stream(args.prompt, _params(args)), args.stats)


def cmd_chat(args) -> None:
    eng = _engine(args)
    params = _params(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []

    def turn(text: str) -> None:
        messages.append({"role": "user", "content": text})
        gen = eng.stream(eng.encode_chat(messages), params, session="cli")
        _stream(gen, args.stats)
        messages.append({"role": "assistant", "content": gen.result.text})

    if args.message:
        turn(" ".join(args.message))
        return
    print("agentfast chat: type a message; /reset clears the conversation, /exit quits",
          file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            del messages[int(bool(args.system)):]
            continue
        if line.strip():
            turn(line)


def cmd_info(args) -> None:
    import torch

    from agentfast.engine.hardware import measure_copy_bandwidth, roofline_tokens_per_s
    from agentfast.engine.loaders import embedded_model_path, load_model

    name = args.model or str(embedded_model_path())
    m = load_model(args.model, progress=_progress(name))
    c = m.config
    wb = c.decode_weight_bytes(2)
    rows = [
        ("model", name),
        ("architecture", f"{c.arch} ({c.num_layers} layers, hidden {c.hidden_size}, "
                         f"{c.num_heads} heads / {c.num_kv_heads} kv heads, head_dim "
                         f"{c.head_dim}, vocab {c.vocab_size}"
                         f"{', tied embeddings' if c.tie_word_embeddings else ''})"),
        ("parameters", f"{c.num_params:,} ({c.num_params / 1e6:.1f}M)"),
        ("weight file bytes", f"{m.file_bytes:,}"),
        ("bytes read per decoded token (bf16)", f"{wb:,}"),
        ("context", f"{c.max_position_embeddings}"),
    ]
    if torch.cuda.is_available():
        bw = measure_copy_bandwidth()
        rows.append(("GPU", torch.cuda.get_device_name()))
        rows.append(("copy bandwidth (read+write)", f"{bw / 1e12:.2f} TB/s"))
        rows.append(("roofline (bf16 weights)", f"{roofline_tokens_per_s(wb, bw):,.0f} tokens/s"))
    else:
        rows.append(("roofline", "needs a CUDA GPU to measure the copy bandwidth"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def cmd_serve(args) -> None:
    import logging

    import uvicorn

    from agentfast.server import create_app

    app = create_app(_engine(args), model_name=args.model_name,
                     request_timeout=args.request_timeout or None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    print(f"agentfast: serving {app.state.agentfast.model!r} on http://{args.host}:{args.port}/v1"
          " (POST /chat/completions, /completions, /responses; GET /models; /health, /metrics)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def cmd_train_mtp(args) -> None:
    from agentfast.spec_decode.train_mtp import train_mtp

    temps = tuple(float(t) for t in args.temperatures.split(","))
    train_mtp(args.model, args.out, steps=args.steps, seq_len=args.seq_len, lr=args.lr,
              device=args.device, batch=args.batch, max_new=args.max_new, temperatures=temps,
              train_layer=not args.freeze_layer, seed=args.seed, overwrite=args.force,
              depth=args.depth, self_prompts=args.self_prompts, gen_batch=args.gen_batch,
              eval_prompts=args.eval_prompts,
              log=lambda s: print(s, file=sys.stderr, flush=True))


def _add_model_args(p: argparse.ArgumentParser, sampling: bool = True) -> None:
    p.add_argument("-m", "--model", help="HF checkpoint folder or .gguf file "
                   "(default: the embedded SmolLM2-135M-Instruct)")
    if not sampling:
        return
    p.add_argument("--backend", default="reference",
                   help="reference (default; CPU or GPU), graph (CUDA graph of Triton kernels), "
                        "monokernel (one persistent kernel per decode)")
    _add_drafter_arg(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--max-context", type=int, default=None, help="cap the KV cache length")
    p.add_argument("-n", "--max-tokens", type=int, default=256)
    p.add_argument("-t", "--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")


def _add_drafter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drafter", default=None,
                   help="speculative decoding (reference and monokernel backends): ngram (suffix "
                        "lookup, also in a JSON-escaped copy of the prompt; on the device with "
                        "the monokernel), ngram:noview (without the copy), mtp, mtp:PATH, "
                        "ngram+mtp[:PATH] (the lookup, the MTP module's draft where it has "
                        "none; inside the kernel with the monokernel), draft:PATH (a smaller "
                        "model, same tokenizer), early:N")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="agentfast", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("chat", help="chat with the model (one-shot when a message is given)")
    _add_model_args(p)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("message", nargs="*", help="one-shot message (omit for interactive)")
    p.set_defaults(fn=cmd_chat)
    p = sub.add_parser("generate", help="continue a raw prompt (no chat template)")
    _add_model_args(p)
    p.add_argument("prompt")
    p.set_defaults(fn=cmd_generate)
    p = sub.add_parser("info", help="architecture, parameters, weight bytes, roofline")
    _add_model_args(p, sampling=False)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/chat/completions, "
                       "/v1/completions, /v1/responses, /metrics)")
    _add_model_args(p, sampling=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", default="reference",
                   help="reference (default), graph, monokernel")
    _add_drafter_arg(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--max-context", type=int, default=None, help="cap the KV cache length")
    p.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds a request may wait + generate (0 = no limit; default 600)")
    p.add_argument("--model-name", default=None,
                   help="the model id clients send (default: the checkpoint's name)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("train-mtp", help="fit an MTP module (speculative decoding drafter) "
                       "to the model by self-distillation on its own outputs")
    _add_model_args(p, sampling=False)
    p.add_argument("--out", required=True, help="the .mtp.safetensors file to write (name it "
                   "<model>.mtp.safetensors beside a .gguf, mtp.safetensors in a folder, and "
                   "drafter='mtp' finds it)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seq-len", type=int, default=128, help="training window (positions)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=8, help="windows per step")
    p.add_argument("--max-new", type=int, default=96, help="tokens generated per prompt")
    p.add_argument("--temperatures", default="0,0.8",
                   help="one continuation per prompt at each (0 = greedy; default 0,0.8)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if present)")
    p.add_argument("--depth", type=int, default=2, help="chained draft depths trained "
                   "(1: the next token only; default 2)")
    p.add_argument("--self-prompts", type=int, default=0, help="also this many user messages "
                   "the model writes itself (Magpie), each continued like the built-in prompts")
    p.add_argument("--gen-batch", type=int, default=16, help="sequences generated at once")
    p.add_argument("--eval-prompts", type=int, default=8,
                   help="held-out prompts decoded speculatively at the end")
    p.add_argument("--freeze-layer", action="store_true", help="fit only eh_proj and the "
                   "norms; the module's layer stays a copy of the model's last layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(fn=cmd_train_mtp)
    sub.add_parser("bench", help="decode speed of every backend beside HF transformers (GPU)",
                   add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: `agentfast bench --help`
        from agentfast.engine.bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except AgentfastError as e:
        print(f"agentfast: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
