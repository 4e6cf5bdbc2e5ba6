"""Per-token log probabilities, computed beside the engine (an optional hook, not engine code).

The engine samples without reporting probabilities. While a generation runs, the worker thread
re-scores each new token: it runs the previous token again at its position on the session's
own KV cache (rewriting the same K/V) and takes the log-softmax of the logits. That costs one
extra forward per token and is exact for the unconstrained distribution before temperature.
Only backends that decode step by step on the host allow it (the reference backend); the others
run ahead of the host and are rejected with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agentfast.engine import Engine

from .protocol import APIError

SUPPORTED_BACKENDS = ("reference",)


def check_supported(engine: Engine, param: str) -> None:
    if engine.backend.name not in SUPPORTED_BACKENDS:
        raise APIError(f"{param}: logprobs are not supported by the {engine.backend.name!r} "
                       f"backend (supported: {', '.join(SUPPORTED_BACKENDS)})", param=param,
                       code="unsupported_value")


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), best first


class Scorer:
    """Runs in the worker thread, between the generation's steps."""

    def __init__(self, engine: Engine, prompt: list[int], session: str, top_n: int):
        self.backend, self.top_n = engine.backend, top_n
        self.cache = engine.sessions.get(session, engine.backend.new_cache).cache
        self.prev, self.pos = prompt[-1], len(prompt) - 1

    def step(self, token_ids: list[int]) -> list[TokenLogprob]:
        out = []
        for t in token_ids:
            logits = self.backend.logits(self.cache, [self.prev], self.pos)[-1]  # [V]
            lp = torch.log_softmax(logits.float(), dim=-1)
            top: list[tuple[int, float]] = []
            if self.top_n:
                v, i = torch.topk(lp, self.top_n)
                top = list(zip(i.tolist(), v.tolist(), strict=True))
            out.append(TokenLogprob(t, float(lp[t]), top))
            self.prev, self.pos = t, self.pos + 1
        return out


def _entry(tok, token_id: int, logprob: float) -> dict:
    s = tok.decode([token_id], skip_special=False)
    return {"token": s, "logprob": logprob, "bytes": list(s.encode("utf-8"))}


def chat_content(tok, lps: list[TokenLogprob]) -> list[dict]:
    """OpenAI chat `logprobs.content` entries."""
    return [{**_entry(tok, x.token_id, x.logprob),
             "top_logprobs": [_entry(tok, i, v) for i, v in x.top]} for x in lps]


def completion_logprobs(tok, lps: list[TokenLogprob], offset0: int = 0) -> dict:
    """OpenAI legacy completions `logprobs` object."""
    tokens = [tok.decode([x.token_id], skip_special=False) for x in lps]
    offsets, o = [], offset0
    for s in tokens:
        offsets.append(o)
        o += len(s)
    return {"tokens": tokens, "token_logprobs": [x.logprob for x in lps],
            "top_logprobs": [{tok.decode([i], skip_special=False): v for i, v in x.top}
                             for x in lps], "text_offset": offsets}
