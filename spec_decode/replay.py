"""Replay agent-loop traces (spec_decode/traces/*.json) and report how many drafts get accepted.

A trace is a chat: {"name", "description", "messages": [{"role", "content"}, ...]}. Two
measures, both on CPU:
- `replay`: the engine (with a drafter) generates every assistant turn greedily from the
  messages before it, in one session; reports the drafter's accepted drafts per step.
- `replay_forced`: no model; the trace's own assistant tokens stand in for the target's greedy
  output, so the number says how well the drafter predicts this kind of text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .drafters import Drafter, DraftLength

if TYPE_CHECKING:
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

    @property
    def mean_accepted(self) -> float:
        """Accepted drafts per verification step (the bonus token not counted)."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def forwards(self) -> int:
        """Forward passes a plain decode would need for `tokens`, minus what drafts saved."""
        return self.tokens - self.accepted


def _assistant_turns(trace: dict) -> list[int]:
    return [i for i, m in enumerate(trace["messages"]) if m["role"] == "assistant"]


def replay(engine: Engine, trace: dict, max_tokens: int = 48) -> ReplayReport:
    """Generate each assistant turn of `trace` with `engine` (greedy, one session)."""
    from agentfast.engine import SamplingParams

    d = engine.drafter
    assert d is not None, "replay needs an engine made with drafter="
    before = (d.steps, d.drafted, d.accepted)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    tokens = 0
    for i in _assistant_turns(trace):
        r = engine.chat(trace["messages"][:i], params, session=f"replay-{trace['name']}")
        tokens += len(r.token_ids)
    engine.sessions.drop(f"replay-{trace['name']}")
    return ReplayReport(trace["name"], tokens, d.steps - before[0], d.drafted - before[1],
                        d.accepted - before[2])


def replay_forced(drafter: Drafter, tokenizer: Tokenizer, trace: dict) -> ReplayReport:
    """Walk each assistant turn's tokens as if they were the target's greedy output: draft,
    accept the prefix that matches, take the next true token as the bonus (no model)."""
    report = ReplayReport(trace["name"], 0, 0, 0, 0)
    msgs = trace["messages"]
    for i in _assistant_turns(trace):
        hist = tokenizer.encode_chat(msgs[:i], add_generation_prompt=True)
        target = tokenizer.encode(msgs[i]["content"])
        length, j = DraftLength(), 0
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


def main(argv: list[str] | None = None) -> int:
    """`python -m agentfast.spec_decode.replay [--drafter mtp] [--trace NAME] [--check]`: replay
    the traces through the engine (CPU by default) and print accepted drafts per step; with
    --check, also generate without the drafter and compare token for token."""
    import argparse

    from agentfast.engine import Engine, SamplingParams

    ap = argparse.ArgumentParser(prog="python -m agentfast.spec_decode.replay")
    ap.add_argument("-m", "--model", default=None, help="default: the embedded model")
    ap.add_argument("--drafter", default="ngram", help="ngram, mtp, mtp:PATH")
    ap.add_argument("--trace", action="append",
                    help="trace name or prefix (repeatable; default: all)")
    ap.add_argument("-n", "--max-tokens", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check", action="store_true", help="compare with plain greedy decode")
    args = ap.parse_args(argv)
    spec = Engine.load(args.model, device=args.device, drafter=args.drafter)
    plain = Engine(spec.model, device=args.device) if args.check else None
    same, total = True, ReplayReport("all", 0, 0, 0, 0)
    for trace in load_traces():
        if args.trace and not any(trace["name"].startswith(t) for t in args.trace):
            continue
        r = replay(spec, trace, args.max_tokens)
        for f in ("tokens", "steps", "drafted", "accepted"):
            setattr(total, f, getattr(total, f) + getattr(r, f))
        line = _summary(r)
        if plain is not None:
            p = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
            msgs = trace["messages"]
            ok = all(spec.chat(msgs[:i], p).token_ids == plain.chat(msgs[:i], p).token_ids
                     for i in _assistant_turns(trace))
            same &= ok
            line += f", equal to plain decode: {ok}"
        print(line, flush=True)
    print(_summary(total))
    return 0 if same else 1


def _summary(r: ReplayReport) -> str:
    return (f"{r.name}: {r.tokens} tokens, {r.steps} steps, {r.drafted} drafted, "
            f"{r.accepted} accepted, mean accepted {r.mean_accepted:.3f} per step, "
            f"{r.tokens / max(r.forwards, 1):.2f} tokens per forward")


if __name__ == "__main__":
    raise SystemExit(main())
