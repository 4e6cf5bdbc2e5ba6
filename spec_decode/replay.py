"""Replay agent-loop traces (spec_decode/traces/*.json) and report how many drafts get accepted.

A trace is a chat: {"name", "kind", "description", "messages": [{"role", "content"}, ...]}
("kind": edit_file, repeat_tool_output, json_tool_call, plain_chat; the bench groups by it), and
optionally "tools" (OpenAI tool dicts): with `tools=True` the replay plays an agent that declares
them and requires a tool call where the script has one (an assistant turn that is a JSON object
with a "name"): that turn is generated under the tool-call grammar (constraints.tool_call, mode
required), as a coding agent's tool turn is on the engine. Two measures, both on CPU:
- `replay`: the engine (with a drafter) generates every assistant turn greedily from the
  messages before it, in one session; reports the drafter's accepted drafts per step.
- `replay_forced`: no model; the trace's own assistant tokens stand in for the target's greedy
  output, so the number says how well the drafter predicts this kind of text.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentfast.engine.backends.monokernel import H200_STEP_COSTS
from agentfast.engine.errors import RequestError

from .drafters import Drafter
from .policy import DraftPolicy, StepCost

if TYPE_CHECKING:
    from collections.abc import Callable

    from agentfast.engine import Engine
    from agentfast.engine.tokenizer import Tokenizer

TRACES = Path(__file__).parent / "traces"


def load_traces(folder: Path = TRACES) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


@dataclass
class ReplayReport:
    name: str
    tokens: int  # generated (or forced) tokens
    steps: int  # verification steps that carried drafts
    drafted: int
    accepted: int
    seconds: float = 0.0  # wall time of the turns (engine replay)
    plain_seconds: float = 0.0  # the same turns without the drafter (--check)
    # of which decoding: from each turn's first token to its last (GenerationResult.decode_s)
    decode_seconds: float = 0.0
    plain_decode_seconds: float = 0.0
    outputs: list[list[int]] = field(default_factory=list, repr=False)  # per turn (engine)
    # steps of a switching kernel by positions per step (the drafter's `widths`; {}: unknown)
    widths: dict[int, int] = field(default_factory=dict)
    # --check: where the output differs from plain decode (divergence_gap), per trace
    divergences: list[dict] = field(default_factory=list)
    # per turn: tokens, wall_s (the engine call), ttft_s, decode_s, widths (and with --check
    # plain_decode_s, plain_ttft_s, plain_wall_s)
    turns: list[dict] = field(default_factory=list)

    def add(self, r: ReplayReport) -> None:
        for f in ("tokens", "steps", "drafted", "accepted", "seconds", "plain_seconds",
                  "decode_seconds", "plain_decode_seconds"):
            setattr(self, f, getattr(self, f) + getattr(r, f))
        self.turns.extend(r.turns)
        self.widths = dict(Counter(self.widths) + Counter(r.widths))
        self.divergences.extend(r.divergences)

    @property
    def mean_accepted(self) -> float:
        """Accepted drafts per verification step (the bonus token not counted)."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def forwards(self) -> int:
        """Forward passes a plain decode would need for `tokens`, minus what drafts saved."""
        return self.tokens - self.accepted


# The Qwen3-1.7B shape in the monokernel on an H200 (bf16, context 1024, random weights): us per
# T = 1 step (bench/results/monokernel-20261129-s8/tune-s8a.json) and the cost of a T-position step
# relative to it (the monokernel backend's table for models of a GB or more). The replay
# projects its measured acceptance onto these.
PROJECTION = ("qwen3-1.7b", 1346.7, H200_STEP_COSTS)


def mtp_fractions(name: str = PROJECTION[0]) -> tuple[float, float]:
    """An MTP module run inside the kernel at shape `name`, in that model's plain steps (its
    weights read over the model's): (its decoder layer and input projection, run every step,
    or with the backend's mtp_lazy where its head runs; its head, the model's own LM head read
    again, run where the next step would be one position)."""
    from agentfast.engine.bench.models import SHAPES

    from .draft_model import forward_params

    cfg = SHAPES[name]
    h, full = cfg.hidden_size, forward_params(cfg)
    layer = (full - cfg.vocab_size * h) / cfg.num_layers + 2 * h * h
    return layer / full, cfg.vocab_size * h / full


def projected(r: ReplayReport, T: int, draft_cost: float = 0.0,
              step_us: float = PROJECTION[1], costs: dict[int, float] = PROJECTION[2],
              extra_steps: float = 0.0) -> dict:
    """r's drafting at another model's step costs: each verification step one step of T
    positions (the monokernel's kernel: T = k_max + 1), each other forward a T = 1 step, each
    drafted token `draft_cost` T = 1 steps (the drafter's own, in its weight bytes), and plain
    decode one T = 1 step per token; host time (launches, a host drafter's latency) is not in
    it. With r.widths (a switching kernel's steps by positions) each of those steps is priced
    at its own width and the other forwards at T = 1; without, every verification step at T;
    `extra_steps`: T = 1 steps of work the kernel adds (an MTP module's: mtp_fractions).
    Returns the projected tokens/s and speedup."""
    cost = StepCost(costs)
    if r.widths:
        run = sum(r.widths.values())
        steps = (sum(n * cost(w) for w, n in r.widths.items())
                 + max(r.forwards - run, 0) + r.drafted * draft_cost)
    else:
        steps = (r.steps * cost(T) + max(r.forwards - r.steps, 0)
                 + r.drafted * draft_cost)
    steps += extra_steps
    if steps <= 0:
        return {"T": T, "tokens_per_s": None, "speedup": None}
    return {"T": T, "tokens_per_s": round(r.tokens / (steps * step_us * 1e-6), 1),
            "plain_tokens_per_s": round(1e6 / step_us, 1), "speedup": round(r.tokens / steps, 3)}


def _assistant_turns(trace: dict) -> list[int]:
    return [i for i, m in enumerate(trace["messages"]) if m["role"] == "assistant"]


def _fixed_policy(k: int | None) -> Callable[[], DraftPolicy | None]:
    """A fresh fixed-k policy per call (no adaptation, no switch-off); None: the backend's."""
    return lambda: DraftPolicy(k=k, k_max=k, adaptive=False) if k else None


def _capped_policy(engine: Engine, k_max: int) -> Callable[[], DraftPolicy]:
    """A fresh adaptive policy per call with the backend's costs and at most k_max drafts
    per step (the monokernel's verification kernel is then T = k_max + 1 positions)."""
    return lambda: DraftPolicy.for_backend(engine.backend, engine.drafter, k_max=k_max,
                                           k=min(4, k_max))


def warm_up(engine: Engine, policy: Callable[[], DraftPolicy | None] = lambda: None,
            tool_sets: list[list[dict]] = ()) -> None:
    """One short greedy generation on a repetitive prompt before anything is timed, under the
    drafter's policy of the timed run (`policy()`: its k sets the kernel's T): the backend's
    kernels (T = 1, and T = k + 1 with a drafter) are built and loaded then, not in the first
    trace's time; and one under the tool-call grammar of each of `tool_sets` (the constrained
    kernels, and each grammar's tables: compiled once per tokenizer, so without this the
    first engine to meet a trace's tools pays for them in its time: 65-540 ms per tool set
    on the 2-core CPU machine); and the chat template rendered once (its first render compiles
    it: 5-7 ms on the H200 machine's host, which the first timed turn of the first engine paid,
    session 20). The drafter's counts and policy start afresh afterwards."""
    from agentfast.engine import SamplingParams
    from agentfast.engine.constraints import tool_call

    d = engine.drafter
    if d is not None:
        d.policy = policy()
    with contextlib.suppress(RequestError):  # (a model without a chat template)
        engine.encode_chat([{"role": "user", "content": "Hi"}])
    engine.generate("1 2 3 4 1 2 3 4 1 2 3 4 1 2 3 4", SamplingParams(max_tokens=24,
                                                                       temperature=0.0))
    for tools in tool_sets:
        engine.generate("Call a tool.", SamplingParams(
            max_tokens=24, temperature=0.0, constraint=tool_call(tools, mode="required")))
    if d is not None:
        d.steps = d.drafted = d.accepted = 0
        d.policy = policy()


NEAR_TIE = 0.1  # fp32 logit gap under which two greedy choices are within bf16 rounding


def first_divergence(got: list[list[int]], want: list[list[int]]) -> tuple[int, int] | None:
    """(turn, position) of the first token where two replays of a trace differ, or None."""
    for ti, (a, b) in enumerate(zip(got, want, strict=False)):
        k = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), None)
        if k is None and len(a) != len(b):
            k = min(len(a), len(b))
        if k is not None:
            return ti, k
    return None if len(got) == len(want) else (min(len(got), len(want)), 0)


def divergence_gap(oracle: Engine, trace: dict, got: list[list[int]],
                   want: list[list[int]]) -> dict | None:
    """Where a replay with a drafter differs from plain decode: the first differing token of
    each, and the oracle's (the reference backend in float32) logit gap between them after the
    common prefix; None where one output ended there (no token to weigh) or none differs.
    A gap under NEAR_TIE is a near-tie: the two kernels' bf16 roundings (the verification's
    T-position step against the plain T = 1 step) picked different argmaxes of a near tie."""
    at = first_divergence(got, want)
    if at is None:
        return None
    ti, k = at
    if ti >= min(len(got), len(want)) or k >= min(len(got[ti]), len(want[ti])):
        return {"turn": ti, "position": k, "gap": None}
    i = _assistant_turns(trace)[ti]
    ids = oracle.encode_chat(trace["messages"][:i]) + want[ti][:k]
    be = oracle.backend
    cache = be.new_cache()
    be.prefill(cache, ids[:-1], 0)
    row = be.logits(cache, ids[-1:], len(ids) - 1)[-1].float()
    a, b = got[ti][k], want[ti][k]
    return {"turn": ti, "position": k, "drafted_token": a, "plain_token": b,
            "gap": round(abs(float(row[a] - row[b])), 4),
            "below_max": round(float(row.max() - max(row[a], row[b])), 4)}


def is_tool_call(text: str) -> bool:
    """The scripted turn is a tool call: a JSON object with a "name"."""
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and "name" in obj


def turn_params(trace: dict, i: int, max_tokens: int, tools: bool = False):
    """Greedy SamplingParams for assistant turn `i` of `trace`; with `tools` and a trace that
    declares them, a turn the script has as a tool call is constrained to one call of one of
    the trace's tools (tool_choice "required")."""
    from agentfast.engine import SamplingParams
    from agentfast.engine.constraints import tool_call

    con = None
    if tools and trace.get("tools") and is_tool_call(trace["messages"][i]["content"]):
        con = tool_call(trace["tools"], mode="required")
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, constraint=con)


def replay(engine: Engine, trace: dict, max_tokens: int = 48,
           tools: bool = False) -> ReplayReport:
    """Generate each assistant turn of `trace` with `engine` (greedy, one session); `tools`:
    tool turns under the tool-call grammar (turn_params)."""
    d = engine.drafter
    assert d is not None, "replay needs an engine made with drafter="
    before = (d.steps, d.drafted, d.accepted)
    w_start = dict(getattr(d, "widths", {}))
    tokens, t0, outputs, turns = 0, time.perf_counter(), [], []
    for i in _assistant_turns(trace):
        params = turn_params(trace, i, max_tokens, tools)
        w0 = dict(getattr(d, "widths", {}))
        c0 = time.perf_counter()
        r = engine.chat(trace["messages"][:i], params, session=f"replay-{trace['name']}")
        wall = time.perf_counter() - c0
        tokens += len(r.token_ids)
        outputs.append(r.token_ids)
        turns.append({"trace": trace["name"], "turn": i, "tokens": len(r.token_ids),
                      "wall_s": round(wall, 6), "ttft_s": round(r.ttft_s, 6),
                      "decode_s": round(r.decode_s, 6), "widths": _widths_since(d, w0)})
    seconds = time.perf_counter() - t0
    engine.sessions.drop(f"replay-{trace['name']}")
    return ReplayReport(trace["name"], tokens, d.steps - before[0], d.drafted - before[1],
                        d.accepted - before[2], seconds, outputs=outputs,
                        widths=_widths_since(d, w_start),
                        decode_seconds=sum(t["decode_s"] for t in turns), turns=turns)


def _widths_since(d: Drafter, w0: dict[int, int]) -> dict[int, int]:
    """The drafter's kernel steps by width since it had `w0`."""
    return dict(Counter(getattr(d, "widths", {})) - Counter(w0))


def replay_forced(drafter: Drafter, tokenizer: Tokenizer, trace: dict,
                  policy: DraftPolicy | None = None) -> ReplayReport:
    """Walk each assistant turn's tokens as if they were the target's greedy output: draft,
    accept the prefix that matches, take the next true token as the bonus (no target model).
    Draft lengths from `policy` (default: adaptive, drafting free, so never switched off)."""
    report = ReplayReport(trace["name"], 0, 0, 0, 0)
    msgs = trace["messages"]
    for i in _assistant_turns(trace):
        hist = tokenizer.encode_chat(msgs[:i], add_generation_prompt=True)
        target = tokenizer.encode(msgs[i]["content"])
        if hasattr(drafter, "begin"):
            drafter.begin(hist)
        length, j = policy or DraftPolicy(), 0
        while j < len(target):
            drafts = drafter.propose(hist, min(length.next_k(), len(target) - j - 1))
            m = 0
            while m < len(drafts) and drafts[m] == target[j + m]:
                m += 1
            if drafts:
                report.steps, report.drafted = report.steps + 1, report.drafted + len(drafts)
                report.accepted += m
            length.update(len(drafts), m)
            hist += target[j:j + m + 1]  # accepted drafts + the bonus token
            j += m + 1
        report.tokens += len(target)
    return report


def trace_kind(trace: dict) -> str:
    return trace.get("kind", trace["name"])


def main(argv: list[str] | None = None) -> int:
    """`python -m agentfast.spec_decode.replay [--drafter D ...] [--trace NAME] [--check]`:
    replay the traces through the engine (CPU by default), once per drafter, and print accepted
    drafts per step by trace and by trace kind; with --check, also generate without the drafter,
    compare token for token and time both."""
    import argparse

    from agentfast.engine import Engine

    ap = argparse.ArgumentParser(prog="python -m agentfast.spec_decode.replay")
    ap.add_argument("-m", "--model", default=None, help="default: the embedded model")
    ap.add_argument("--drafter", action="append",
                    help="ngram, mtp, mtp:PATH, ngram+mtp[:PATH] (the lookup, the MTP module "
                         "where it has nothing), draft:PATH (a draft model), early:N (the "
                         "target's first N layers); repeatable (default: ngram)")
    ap.add_argument("--trace", action="append",
                    help="trace name or prefix (repeatable; default: all)")
    ap.add_argument("-n", "--max-tokens", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="reference",
                    help="reference, or monokernel (CUDA; on CPU under TRITON_INTERPRET=1)")
    ap.add_argument("-k", "--fixed-k", type=int, default=None,
                    help="always draft K tokens (no adaptation, no switch-off): the drafter's "
                         "acceptance alone; default: the adaptive policy with the backend's costs")
    ap.add_argument("--k-max", type=int, default=None,
                    help="adaptive policy with at most K drafts per step (default: the "
                         "policy's ceiling, 8)")
    ap.add_argument("--switch-t", type=int, default=None,
                    help="monokernel, n-gram drafter on the device: its kernel switches per "
                         "step between T positions (at most this many), one and the narrow "
                         "steps (default: the backend's, 16); 0: one T per launch, paused and "
                         "probed between launches")
    ap.add_argument("--switch-narrow", type=int, default=None,
                    help="monokernel, switching: the T kernel also runs steps of this many "
                         "positions; drafting steps run narrow, and at T after a step that "
                         "kept all of a narrow step's drafts (default: the backend's, 2; 0: "
                         "two widths, one position and T)")
    ap.add_argument("--switch-match", default=None, metavar="MIN,WIDE[,NEED]",
                    help="monokernel, switching: a drafting step whose lookup match is "
                         "shorter than MIN runs as one position, one of WIDE or more wide; "
                         "NEED: also wide after a step that kept that many drafts (default: "
                         "the backend's, 2,4 and no NEED; 0,0,1: session 13's rule, wide "
                         "after a narrow step of 2 kept its draft)")
    ap.add_argument("--measure-costs", action="store_true",
                    help="measure this machine's T-step costs first (policy.measure_step_costs) "
                         "instead of the backend's table (not the monokernel: its verification "
                         "steps are its own kernels; tune.py --tsteps measures those)")
    ap.add_argument("--check", action="store_true",
                    help="compare with plain greedy decode (and time it)")
    ap.add_argument("--tools", action="store_true",
                    help="traces that declare tools: the turns the script has as tool calls "
                         "are generated under the tool-call grammar (tool_choice required)")
    ap.add_argument("--mtp-floor", type=float, default=None,
                    help="ngram+mtp: the module's draft is used where its probability is at "
                         "least this (default: the drafter's, 0.3)")
    ap.add_argument("--mtp-eager", action="store_true",
                    help="monokernel, ngram+mtp: the module's ops after every step (its K/V "
                         "whole), not only where its draft may be used")
    ap.add_argument("--json", default=None, help="write one record per drafter and kind here")
    args = ap.parse_args(argv)
    if args.mtp_floor is not None and not 0.0 <= args.mtp_floor <= 1.0:
        ap.error(f"--mtp-floor {args.mtp_floor}: a probability, 0..1")
    if args.k_max is not None and args.k_max < 1:
        ap.error(f"--k-max {args.k_max}: at least 1 draft per step")
    if args.switch_t is not None and not (args.switch_t == 0 or 2 <= args.switch_t <= 16):
        ap.error(f"--switch-t {args.switch_t}: 0 (no switching) or 2..16 positions")
    if args.switch_narrow is not None and not (
            args.switch_narrow == 0 or 2 <= args.switch_narrow < (args.switch_t or 16)):
        ap.error(f"--switch-narrow {args.switch_narrow}: 0 (two widths) or 2 or more "
                 f"positions, fewer than --switch-t's")
    match = None
    if args.switch_match is not None:
        try:
            match = [int(v) for v in args.switch_match.split(",")]
        except ValueError:
            match = []
        if len(match) not in (2, 3) or min(match) < 0:
            ap.error(f"--switch-match {args.switch_match}: MIN,WIDE[,NEED], integers >= 0")
    traces = [t for t in load_traces()
              if not args.trace or any(t["name"].startswith(p) for p in args.trace)]
    base = Engine.load(args.model, device=args.device, backend=args.backend)
    import torch

    plain = Engine(base.model, device=args.device, backend=args.backend) if args.check else None
    tool_sets = [t["tools"] for t in traces if t.get("tools")] if args.tools else []
    if plain is not None:
        warm_up(plain, tool_sets=tool_sets)
    oracle = None  # the fp32 reference, made at the first differing output (divergence_gap)
    gpu = (torch.cuda.get_device_name(torch.device(args.device))
           if torch.device(args.device).type == "cuda" else "cpu")
    costs = None
    if args.measure_costs:
        from .policy import measure_step_costs

        t = measure_step_costs(base.backend)
        costs = {T: round(c / t[1], 3) for T, c in t.items()}
        print(f"step costs (T: time relative to T = 1): {costs}", flush=True)
    same, records, plain_runs = True, [], {}
    for spec in args.drafter or ["ngram"]:
        eng = Engine(base.model, device=args.device, backend=args.backend, drafter=spec)
        if args.mtp_floor is not None:
            if not hasattr(eng.drafter, "floor"):
                ap.error(f"--mtp-floor: drafter {spec} has no MTP fallback (ngram+mtp)")
            eng.drafter.floor = args.mtp_floor
        if args.mtp_eager:
            if not hasattr(eng.backend, "mtp_lazy"):
                ap.error(f"--mtp-eager: the {args.backend} backend runs no MTP module itself")
            eng.backend.mtp_lazy = False
        if costs:
            eng.backend.step_costs = costs
        if args.switch_t is not None:
            if not hasattr(eng.backend, "switch_t"):
                ap.error(f"--switch-t: the {args.backend} backend does not switch per step")
            eng.backend.switch_t = args.switch_t
        if args.switch_narrow is not None:
            if not hasattr(eng.backend, "switch_narrow"):
                ap.error(f"--switch-narrow: the {args.backend} backend does not switch per step")
            eng.backend.switch_narrow = args.switch_narrow
        if match is not None:
            if not hasattr(eng.backend, "switch_match_min"):
                ap.error(f"--switch-match: the {args.backend} backend does not switch per step")
            b_ = eng.backend
            b_.switch_match_min, b_.switch_match_wide = match[:2]
            b_.switch_need = match[2] if len(match) > 2 and match[2] else None
        switch_t = getattr(eng.backend, "switch_t", 0)
        pick = (_capped_policy(eng, args.k_max) if args.k_max and not args.fixed_k
                else _fixed_policy(args.fixed_k))
        warm_up(eng, pick, tool_sets)
        policy = (f"fixed k={args.fixed_k}" if args.fixed_k else
                  f"adaptive, k <= {args.k_max}" if args.k_max else "adaptive")
        # the monokernel's verification kernel for this policy (DraftPolicy's default k_max: 8)
        k_cap = (args.fixed_k or args.k_max
                 or getattr(eng.backend, "draft_k_max", lambda d: None)(eng.drafter)
                 or DraftPolicy().k_max)
        T_kernel = min(16, k_cap + 1)
        if switch_t > 1 and not args.fixed_k and eng.backend.drafts_on_device(eng.drafter):
            T_kernel = min(T_kernel, switch_t)  # (one-position steps where nothing is drafted)
            policy += f", per-step switching, T = {T_kernel}"
            if 1 < getattr(eng.backend, "switch_narrow", 0) < T_kernel:
                b_ = eng.backend
                policy += (f" (narrow steps of {b_.switch_narrow}; by the lookup's match: "
                           f"one position below {b_.switch_match_min}, wide from "
                           f"{b_.switch_match_wide or 'never'}; wide after "
                           f"{b_.switch_need or 'never'} kept)")
        print(f"== drafter {spec} ({getattr(eng.drafter, 'source', '') or spec}), {policy}, "
              f"draft cost {eng.drafter.draft_cost:.3f} steps per token", flush=True)
        total, kinds = ReplayReport("all", 0, 0, 0, 0), {}
        mtp_by: dict[str, list[int]] = {}  # kind -> [steps, accepted] of the MTP fallback
        for trace in traces:
            m0 = (getattr(eng.drafter, "mtp_steps", 0), getattr(eng.drafter, "mtp_accepted", 0))
            r = replay(eng, trace, args.max_tokens, args.tools)
            if hasattr(eng.drafter, "mtp_steps"):
                for key in (trace_kind(trace), "all"):
                    c = mtp_by.setdefault(key, [0, 0])
                    c[0] += eng.drafter.mtp_steps - m0[0]
                    c[1] += eng.drafter.mtp_accepted - m0[1]
            line = _summary(r)
            if plain is not None:
                if trace["name"] not in plain_runs:  # once for all drafters
                    msgs = trace["messages"]
                    t0 = time.perf_counter()
                    res, walls = [], []
                    for i in _assistant_turns(trace):
                        c0 = time.perf_counter()
                        res.append(plain.chat(msgs[:i], turn_params(trace, i, args.max_tokens,
                                                                    args.tools), session="plain"))
                        walls.append(time.perf_counter() - c0)
                    plain_runs[trace["name"]] = ([x.token_ids for x in res],
                                                 time.perf_counter() - t0,
                                                 [(x.decode_s, x.ttft_s, w)
                                                  for x, w in zip(res, walls, strict=True)])
                    plain.sessions.drop("plain")
                want, r.plain_seconds, pdec = plain_runs[trace["name"]]
                r.plain_decode_seconds = sum(p[0] for p in pdec)
                for t, (ps, pt, pw) in zip(r.turns, pdec, strict=True):
                    t["plain_decode_s"], t["plain_ttft_s"], t["plain_wall_s"] = (
                        round(ps, 6), round(pt, 6), round(pw, 6))
                ok = r.outputs == want  # both in one session per trace
                line += f", equal to plain decode: {ok}"
                if not ok:
                    oracle = oracle or Engine(base.model, device=args.device,
                                              backend="reference", dtype=torch.float32)
                    div = divergence_gap(oracle, trace, r.outputs, want)
                    tie = div is not None and div["gap"] is not None and div["gap"] < NEAR_TIE
                    r.divergences.append({"trace": trace["name"], **(div or {}),
                                          "near_tie": tie})
                    line += (f" (turn {div['turn']} token {div['position']}: fp32 logit gap "
                             f"{div['gap']} between the two choices, "
                             f"{'a near-tie' if tie else 'NOT a near-tie'})" if div else "")
                    same &= tie
            total.add(r)
            kinds.setdefault(trace_kind(trace), ReplayReport(trace_kind(trace), 0, 0, 0, 0)).add(r)
            print(line, flush=True)
        for k in [*kinds.values(), total]:
            mtp = mtp_by.get(k.name)
            extra = 0.0
            if mtp and k.widths:  # the module in the kernel: its head on the one-position
                # steps and before each of its own drafts, its layer there too (the backend's
                # mtp_lazy) or every step
                f_layer, f_head = mtp_fractions()
                runs = k.widths.get(1, 0) + mtp[0]
                every = not getattr(eng.backend, "mtp_lazy", False)
                extra = (sum(k.widths.values()) if every else runs) * f_layer + runs * f_head
            proj = projected(k, T_kernel, eng.drafter.draft_cost, extra_steps=extra)
            print(("  kind " + _summary(k) if k is not total else _summary(k))
                  + f"; {PROJECTION[0]} projected {proj['speedup']}x at T = {T_kernel}"
                  + (f"; of these the MTP fallback's steps {mtp[0]}, its drafts kept {mtp[1]}"
                     if mtp else ""))
            tps = k.tokens / k.seconds if k.seconds else None
            plain_tps = k.tokens / k.plain_seconds if k.plain_seconds else None
            records.append({"gpu": gpu, "backend": args.backend, "drafter": spec,
                            "policy": policy, "trace_set": "spec_decode/traces", "kind": k.name,
                            **({"mtp_eager": True} if args.mtp_eager else {}),
                            "tools": "required where the script calls one" if args.tools
                            else "off",
                            "model": str(base.model.source), "max_tokens": args.max_tokens,
                            "mean_accepted": round(k.mean_accepted, 4),
                            "tokens_per_forward": round(k.tokens / max(k.forwards, 1), 4),
                            # end to end over the turns (prefill included), and the same turns
                            # without the drafter in this run (--check)
                            "tokens_per_s": round(tps, 2) if tps else None,
                            "plain_tokens_per_s": round(plain_tps, 2) if plain_tps else None,
                            "speedup": round(k.plain_seconds / k.seconds, 3)
                            if k.plain_seconds and k.seconds else None,
                            # the decoding alone (each turn's first token to its last: the
                            # prefill and the host's work before it left out), both runs
                            "decode_speedup": round(k.plain_decode_seconds / k.decode_seconds,
                                                    3)
                            if k.plain_decode_seconds and k.decode_seconds else None,
                            # this acceptance at the Qwen3-1.7B shape's measured step costs
                            "projected": {"shape": PROJECTION[0], **proj},
                            **({"mtp_steps": mtp[0], "mtp_accepted": mtp[1]} if mtp else {}),
                            **{f: v for f, v in asdict(k).items()
                               if f not in ("outputs", "turns")},
                            **({"turns": k.turns} if k is total else {})})
        pol = eng.drafter.policy
        if not args.fixed_k and pol is not None:
            dev = getattr(pol, "step_accepted", None)  # drafting on the device (monokernel)
            est = (f"tokens kept past the first per step {dev:.2f} (device mean)"
                   if dev is not None else f"acceptance estimate {pol.rate:.2f}")
            print(f"  policy: switched off {pol.switched_off} times, {est}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return 0 if same else 1


def _summary(r: ReplayReport) -> str:
    s = (f"{r.name}: {r.tokens} tokens, {r.steps} steps, {r.drafted} drafted, "
         f"{r.accepted} accepted, mean accepted {r.mean_accepted:.3f} per step, "
         f"{r.tokens / max(r.forwards, 1):.2f} tokens per forward, {r.seconds:.3f} s")
    if r.widths:
        s += ", kernel steps by positions " + " ".join(
            f"{w}:{n}" for w, n in sorted(r.widths.items()))
    if r.plain_seconds:
        s += f" (plain {r.plain_seconds:.3f} s: {r.plain_seconds / r.seconds:.2f}x"
        if r.plain_decode_seconds and r.decode_seconds:
            s += (f"; decoding {r.decode_seconds:.3f} s against {r.plain_decode_seconds:.3f}"
                  f" s: {r.plain_decode_seconds / r.decode_seconds:.2f}x")
        s += ")"
    return s


if __name__ == "__main__":
    raise SystemExit(main())
