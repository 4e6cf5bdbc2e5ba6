"""Per-token overhead of constrained decoding in the graph and monokernel backends (CUDA;
target <= 2%).

`python -m agentfast.engine.constraints.gpu_bench [--models smollm2-135m qwen3-1.7b]
[--backends graph,monokernel] [--steps 300] [--context 512] [--temperature 0] [--out FILE]`

For each model shape (random bf16 weights at a real shape, engine/bench/models.py) and each
backend, `--steps` timed steps are decoded after a `--context`-token prompt, first
unconstrained, then under each constraint (json_object, a forced tool call with free string
fields, text-or-call), then unconstrained again (the two unconstrained runs give the noise
floor). The overhead is constrained / unconstrained - 1 of the same backend. Graph: each step
is one replay of the captured decode graph between two CUDA events; the number is device time
per step (mean and median over steps). Monokernel: the steps run in `--mk-launches` launches
of the persistent kernel (mask, choice and automaton walk inside it, no host round trip), each
between two CUDA events (the GPU held busy while the host issues the launch, so the host's
launch cost is not timed); the number is device time per step of each launch (mean and median
over launches).

The automata are compiled over a real tokenizer (default: the embedded SmolLM2's, 49152 ids,
which is exactly smollm2-135m's vocabulary). A larger shape gets the same automaton padded to
its vocabulary (`TokenAutomaton.padded`: the added ids are never allowed), so the mask kernel
reads and writes full-width rows as it would for that model's own tokenizer; the states and
transitions are those of the 49k vocabulary.

Random weights finish a JSON object or a tool call early. So that every timed step masks and
advances in a live state, between two timed replays (outside the events) the device state is
logged and, when the output ended (an EOS was picked, or the state allows only EOS), set back
to the start state: the next output begins (in the same growing context). After the
run the host walks the logged tokens through its own automaton and checks every device state
(a wrong or dead state fails the bench, it is not averaged in). The monokernel restarts on the
device instead (start_sequence(restart=True): a state that allows only EOS goes back to the
start state, no stop ids, so an EOS picked in an accepting state loops there); the host walks
each launch's tokens the same way (`check_tokens`) and checks the state the kernel ends in.
Results print as a table and go to JSON: --out, or $OUT/constraint_overhead.json when $OUT is
set. No GPU, no numbers: on a machine without CUDA it exits with an error (`time_monokernel`
alone also runs on the CPU interpreter, for tests). Imports neither the server nor triton at
import.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

WRITE_FILE = {"type": "function", "function": {
    "name": "write_file", "strict": True, "parameters": {
        "type": "object", "properties": {"path": {"type": "string"},
                                         "content": {"type": "string"}},
        "required": ["path", "content"], "additionalProperties": False}}}
RUN_SHELL = {"type": "function", "function": {
    "name": "run_shell", "strict": True, "parameters": {
        "type": "object", "properties": {"command": {"type": "string"},
                                         "timeout_s": {"type": "integer", "minimum": 1,
                                                       "maximum": 600}},
        "required": ["command", "timeout_s"], "additionalProperties": False}}}
CONSTRAINTS = ("json_object", "tool_call", "text_or_call")
BACKENDS = ("graph", "monokernel")
TARGET_PCT = 2.0


def make_constraint(name: str) -> Any:
    from . import json_object, tool_call

    if name == "json_object":
        return json_object()  # the server's response_format json_object
    if name == "tool_call":
        return tool_call([WRITE_FILE, RUN_SHELL])  # tool_choice required
    if name == "text_or_call":
        return tool_call([WRITE_FILE, RUN_SHELL], mode="auto")
    raise ValueError(f"unknown constraint {name!r} (known: {', '.join(CONSTRAINTS)})")


def load_tokenizer(path: str | None) -> Any:
    """A tokenizer alone (no weights): an HF folder, a .gguf file, or None for the embedded
    SmolLM2."""
    from ..loaders import embedded_model_path

    p = embedded_model_path() if path is None else Path(path).expanduser()
    if p.is_dir():
        from ..tokenizer import load_hf_tokenizer

        return load_hf_tokenizer(p)
    import gguf

    from ..loaders.gguf_tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(gguf.GGUFReader(p), str(p))


def fit_vocab(automaton: Any, vocab_size: int) -> Any:
    """The automaton over the model's `vocab_size` ids (padded when the model has more)."""
    if vocab_size < automaton.vocab_size:
        raise ValueError(f"the tokenizer has {automaton.vocab_size} ids, the model only "
                         f"{vocab_size}: use a tokenizer of this model (--tokenizer)")
    return automaton if vocab_size == automaton.vocab_size else automaton.padded(vocab_size)


def check_walk(automaton: Any, start: int, tokens: list[int], states: list[int]) -> int:
    """Check the device's walk on the host: from state `start`, token i must lead to states[i]
    (the state logged after step i, before any reset); after an EOS token or in a state that
    allows only EOS the walk restarts at the start state, as the bench does on the device.
    Returns the number of restarts; raises AssertionError on the first wrong (or dead) state."""
    state, resets = start, 0
    for i, (tok, got) in enumerate(zip(tokens, states, strict=True)):
        want = automaton.next(state, tok)
        assert want >= 0, f"step {i}: token {tok} is not allowed in state {state}"
        assert got == want, f"step {i}: device state {got}, host state {want} (token {tok})"
        state = want
        if tok in automaton.eos_ids or automaton.is_done(state):
            state, resets = automaton.state0, resets + 1
    return resets


def check_tokens(automaton: Any, start: int, tokens: list[int]) -> tuple[int, int]:
    """Check a monokernel launch's tokens on the host: from state `start`, every token must be
    allowed; a state that allows only EOS restarts at the start state (as the kernel does with
    restart=True; an EOS in an accepting state loops there). Returns (the state after the last
    token, the number of restarts); AssertionError on the first token not allowed."""
    state, resets = start, 0
    for i, tok in enumerate(tokens):
        nxt = automaton.next(state, tok)
        assert nxt >= 0, f"token {i} ({tok}) is not allowed in state {state}"
        state = nxt
        if automaton.is_done(state):
            state, resets = automaton.state0, resets + 1
    return state, resets


def summarize(ms: list[float]) -> dict[str, float]:
    return {"mean_ms": statistics.fmean(ms), "median_ms": statistics.median(ms),
            "min_ms": min(ms), "steps": len(ms)}


def overhead_pct(constrained: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * (constrained[f"{k}_ms"] / base[f"{k}_ms"] - 1) for k in ("mean", "median")}


def time_steps(backend: Any, cache: Any, prompt: list[int], steps: int, warmup: int,
               temperature: float, automaton: Any = None) -> dict[str, Any]:
    """Device ms of `steps` graph replays after prefilling `prompt` (see the module doc)."""
    from ..sampling import SamplingParams

    dev = backend.device
    params = SamplingParams(max_tokens=2, temperature=temperature, seed=0)
    logits = backend.prefill(cache, prompt, 0)
    # decode() sets the step buffers up (sampling params, start state) and captures the graph;
    # its first replay runs before the first token is yielded.
    it = backend.decode(cache, logits, len(prompt), params, frozenset(), 2, automaton=automaton)
    next(it)
    it.close()
    st = backend._state(cache)
    auto = automaton.to(dev) if automaton is not None else None
    graph = backend._graph(st, cache, params.greedy, auto)  # the captured graph (memoized)
    start = torch.full((1,), automaton.state0 if automaton is not None else 0,
                       dtype=torch.int32, device=dev)
    toks = torch.zeros(steps, dtype=torch.int32, device=dev)
    states = torch.zeros(steps, dtype=torch.int32, device=dev)

    eos = torch.tensor(automaton.eos_ids if automaton is not None else [], device=dev)

    def reset_if_done() -> None:  # outside the timed window: the output ended, start anew
        ended = auto.done[st.cstate.clamp(min=0).long()] | (st.tok == eos).any()
        st.cstate.copy_(torch.where(ended, start, st.cstate))

    for _ in range(warmup):
        graph.replay()
        if auto is not None:
            reset_if_done()
    first_state = int(st.cstate[0])  # (synchronizes)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(steps)]
    for i, (a, b) in enumerate(events):
        a.record()
        graph.replay()
        b.record()
        if auto is not None:
            toks[i:i + 1].copy_(st.tok)
            states[i:i + 1].copy_(st.cstate)
            reset_if_done()
    torch.cuda.synchronize(dev)
    out: dict[str, Any] = summarize([a.elapsed_time(b) for a, b in events])
    if automaton is not None:
        t, s = toks.tolist(), states.tolist()
        out["resets"] = check_walk(automaton, first_state, t, s)
        out["eos_steps"] = sum(x in automaton.eos_ids for x in t)
        out["sample_ids"] = t[:64]
    return out


def time_monokernel(backend: Any, cache: Any, prompt: list[int], steps: int, warmup: int,
                    temperature: float, automaton: Any = None, launches: int = 10
                    ) -> dict[str, Any]:
    """Device ms per step of the monokernel backend: `warmup` steps in one launch, then `steps`
    in `launches` launches, each between two CUDA events (CPU, interpreter: wall time), all
    in one growing context after prefilling `prompt`. Under `automaton` the kernel masks and
    walks it and restarts at its start state where only EOS is allowed (see the module doc);
    the host checks every launch's tokens and the state the kernel ends in."""
    from ...kernels.monokernel import weights as W
    from ...kernels.monokernel.sampling import choose, sampling_mode

    dev = backend.device
    cuda = dev.type == "cuda"
    cap = backend.plan.tiling.cand
    mode, top_k = sampling_mode(temperature, 0, 1.0, backend.cfg.vocab_size, cap)
    logits = backend.prefill(cache, prompt, 0)
    auto = automaton.to(dev) if automaton is not None else None
    state = automaton.state0 if automaton is not None else 0
    if auto is not None:
        logits = auto.mask_logits(logits, state)
    tok, _ = choose(logits, mode, temperature, top_k, 1.0, len(prompt), cap)
    if automaton is not None:
        state, _ = check_tokens(automaton, state, [tok])
    pos, b, out = len(prompt), backend._buffers(cache), {"resets": 0, "tokens": []}

    def launch(n: int) -> float:  # n steps from (tok, pos, state); ms
        nonlocal tok, pos, state
        W.start_sequence(b, backend.w, token=tok, pos=pos, max_new=n + 1, stop_ids=[],
                         capacity=cache.capacity, mode=mode, temperature=temperature,
                         top_k=top_k, seed=0, automaton=auto, cstate=state, restart=True)
        if cuda:
            ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(1_000_000)  # busy while the host launches: not timed
            ev[0].record()
        t0 = time.perf_counter()
        backend.kernel.launch(b, n, sampling=mode != W.GREEDY)
        if cuda:
            ev[1].record()
            ev[1].synchronize()
        ms = ev[0].elapsed_time(ev[1]) if cuda else 1e3 * (time.perf_counter() - t0)
        backend.kernel.check(b)
        ran = int(b.state[W.STEPS])
        assert ran == n, f"the kernel ran {ran} of {n} steps (done {int(b.state[W.DONE])})"
        toks = b.host[W.HOST_HDR + 1:W.HOST_HDR + 1 + n].tolist()
        if automaton is not None:
            state, resets = check_tokens(automaton, state, toks)
            got = int(b.state[W.C_STATE])
            assert got == state, f"device state {got}, host state {state}"
            out["resets"] += resets
        tok, pos = toks[-1], pos + n
        out["tokens"] += toks
        return ms / n

    launch(max(1, warmup))
    out.update(resets=0, tokens=[])
    per = [launch(n) for n in (steps // launches + (i < steps % launches)
                               for i in range(launches)) if n]
    toks = out.pop("tokens")
    res: dict[str, Any] = {**summarize(per), **out, "steps": steps, "launches": len(per)}
    if automaton is not None:
        res["eos_steps"] = sum(x in automaton.eos_ids for x in toks)
        res["sample_ids"] = toks[:64]
    else:
        res.pop("resets")
    return res


def bench_shape(key: str, tokenizer: Any, automata: dict[str, Any], args: Any,
                backend_name: str = "graph") -> dict[str, Any]:
    import dataclasses

    from ..backends import create_backend
    from ..bench.models import SHAPES, random_weights

    dev, dtype = torch.device("cuda"), torch.bfloat16
    cfg = SHAPES[key]
    max_len = args.context + args.steps + args.warmup + 16
    cfg = dataclasses.replace(cfg, max_position_embeddings=max(cfg.max_position_embeddings,
                                                               max_len))
    backend = create_backend(backend_name, cfg, random_weights(cfg, dev, dtype), dev, dtype,
                             max_len)
    cache = backend.new_cache()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, tokenizer.vocab_size, (args.context,), generator=g).tolist()
    rec: dict[str, Any] = {"model": key, "backend": backend_name, "vocab_size": cfg.vocab_size,
                           "tokenizer_vocab": tokenizer.vocab_size, "context": args.context,
                           "temperature": args.temperature, "runs": {}}

    def run(label: str, automaton: Any = None) -> None:
        if backend_name == "monokernel":
            r = time_monokernel(backend, cache, prompt, args.steps, args.warmup,
                                args.temperature, automaton, args.mk_launches)
        else:
            r = time_steps(backend, cache, prompt, args.steps, args.warmup, args.temperature,
                           automaton)
        if "sample_ids" in r:
            r["sample_text"] = tokenizer.decode(r.pop("sample_ids"))[:200]
        rec["runs"][label] = r
        print(f"  {key} {backend_name} {label:14} mean {r['mean_ms']:.4f} ms  median "
              f"{r['median_ms']:.4f} ms" + (f"  resets {r['resets']}" if "resets" in r else ""),
              flush=True)

    run("unconstrained")
    for name, a in automata.items():
        fitted = fit_vocab(a, cfg.vocab_size)
        run(name, fitted)
        rec["runs"][name].update(table_bytes=fitted.nbytes, states=fitted.num_states,
                                 max_exceptions=fitted.max_exc)
    run("unconstrained_2")
    u1, u2 = rec["runs"]["unconstrained"], rec["runs"]["unconstrained_2"]
    base = {f"{k}_ms": (u1[f"{k}_ms"] + u2[f"{k}_ms"]) / 2 for k in ("mean", "median")}
    rec["baseline"] = base
    rec["noise_pct"] = overhead_pct(u2, u1)
    rec["overhead_pct"] = {n: overhead_pct(rec["runs"][n], base) for n in automata}
    return rec


def format_table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'model':14} {'backend':10} {'constraint':14} {'ms/step':>9} {'overhead':>9} "
             f"{'median':>9}"]
    for r in records:
        b, be = r["baseline"], r.get("backend", "graph")
        lines.append(f"{r['model']:14} {be:10} {'(none)':14} {b['mean_ms']:9.4f} {'':>9} "
                     f"{'noise':>4} {r['noise_pct']['mean']:+.2f}%")
        for n, o in r["overhead_pct"].items():
            lines.append(f"{r['model']:14} {be:10} {n:14} {r['runs'][n]['mean_ms']:9.4f} "
                         f"{o['mean']:+8.2f}% {o['median']:+8.2f}%")
    worst = max((o["mean"] for r in records for o in r["overhead_pct"].values()), default=0.0)
    lines.append(f"worst overhead {worst:+.2f}% (target <= {TARGET_PCT}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..bench.models import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen3-1.7b"],
                    choices=sorted(SHAPES))
    ap.add_argument("--constraints", nargs="+", default=list(CONSTRAINTS), choices=CONSTRAINTS)
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help=f"comma-separated, of {', '.join(BACKENDS)}")
    ap.add_argument("--mk-launches", type=int, default=10,
                    help="monokernel: launches the timed steps are split into")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--context", type=int, default=512, help="prompt tokens before decoding")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (argmax)")
    ap.add_argument("--tokenizer", default=None,
                    help="HF folder or .gguf whose tokenizer the automata use (default: embedded)")
    ap.add_argument("--out", default=None, help="JSON file (default: $OUT/"
                    "constraint_overhead.json when $OUT is set)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if not backends or any(b not in BACKENDS for b in backends):
        ap.error(f"--backends: a comma-separated list of {', '.join(BACKENDS)}")
    if not torch.cuda.is_available():
        print("gpu_bench: needs a CUDA GPU (no numbers without one)", file=sys.stderr)
        return 2
    from . import compile as compile_constraint

    tokenizer = load_tokenizer(args.tokenizer)
    automata = {n: compile_constraint(make_constraint(n), tokenizer) for n in args.constraints}
    for n, a in automata.items():
        print(f"{n}: {a.num_states} states, {a.nbytes / 1024:.0f} KiB "
              f"({a.full_csr_nbytes / 1024:.0f} KiB with every transition listed), "
              f"longest exception row {a.max_exc}", flush=True)
    records = []
    for key in args.models:
        for name in backends:
            records.append(bench_shape(key, tokenizer, automata, args, name))
            torch.cuda.empty_cache()  # the shape's weights and cache are gone with its backend
    print(format_table(records))
    out = args.out or (str(Path(os.environ["OUT"]) / "constraint_overhead.json")
                       if os.environ.get("OUT") else None)
    if out:
        doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "target_pct": TARGET_PCT, "records": records}
        Path(out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
