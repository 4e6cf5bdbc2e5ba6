"""Per-turn timings of an agent run, measured on the client side of the in-process OpenAI API:
time to first token, decode speed, prefilled vs reused prompt tokens (the server reports reused
ones as usage.prompt_tokens_details.cached_tokens), accepted draft tokens of speculative
decoding (reported as usage.completion_tokens_details.accepted_prediction_tokens) and, on an
engine driven directly, the mean accepted per verification step, tool time and what is left (host
overhead, which here includes the server's own work; `python -m agentfast.agent.bench` splits
the engine's prefill and decode time from it).
Knows nothing of the engine's internals."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class TurnTrace:
    turn: int
    prompt_tokens: int = 0
    cached_tokens: int = 0  # reused from the session's KV cache
    completion_tokens: int = 0
    accepted_draft_tokens: int = 0  # speculative decoding: drafted tokens kept
    # mean accepted drafts per verification step (an Engine driven directly; a client's usage
    # has only the count, so 0 there)
    accepted_draft_length: float = 0.0
    ttft_s: float = 0.0  # request sent -> first streamed token
    model_s: float = 0.0  # request sent -> last chunk
    # wall time during which at least one of this turn's tool functions ran (they run
    # concurrently); dispatching them (validation, thread hops) is host time
    tool_s: float = 0.0
    total_s: float = 0.0  # the whole turn, request to tool results appended

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def decode_tps(self) -> float:
        decode_s = self.model_s - self.ttft_s
        return (self.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0

    @property
    def host_s(self) -> float:
        return max(0.0, self.total_s - self.model_s - self.tool_s)

    def to_dict(self) -> dict:
        return {**asdict(self), "prefilled_tokens": self.prefilled_tokens,
                "decode_tps": self.decode_tps, "host_s": self.host_s}


@dataclass
class Trace:
    turns: list[TurnTrace] = field(default_factory=list)

    def summary(self) -> str:
        rows = ["turn  ttft_ms  decode_tok/s  prefilled  reused  out  accepted  acc/step  "
                "tool_ms  host_ms"]
        for t in self.turns:
            rows.append(f"{t.turn:>4}  {t.ttft_s * 1e3:7.1f}  {t.decode_tps:12.1f}  "
                        f"{t.prefilled_tokens:9d}  {t.cached_tokens:6d}  "
                        f"{t.completion_tokens:3d}  {t.accepted_draft_tokens:8d}  "
                        f"{t.accepted_draft_length:8.2f}  "
                        f"{t.tool_s * 1e3:7.1f}  {t.host_s * 1e3:7.1f}")
        total = sum(t.total_s for t in self.turns)
        rows.append(f"{len(self.turns)} turns, {total:.3f} s")
        return "\n".join(rows)

    def to_json(self) -> str:
        return json.dumps({"turns": [t.to_dict() for t in self.turns]})
