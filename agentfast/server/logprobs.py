"""Per-token log probabilities: the engine's `TokenLogprob`s -> OpenAI's logprobs shapes.

The engine reports them on request (`Engine.stream(..., logprobs=k)`): each decode step scores
the token it sampled from the logits it computed anyway (log_softmax before temperature, top-p
and constraint masking; no extra forward). Backends that cannot (`supports_logprobs` false)
are answered with a 400 naming the field.
"""

from __future__ import annotations

from agentfast.engine import Engine
from agentfast.engine.backends import MAX_TOP_LOGPROBS, TokenLogprob

from .protocol import APIError

__all__ = ["MAX_TOP_LOGPROBS", "TokenLogprob", "chat_content", "check_supported",
           "completion_logprobs"]


def check_supported(engine: Engine, param: str) -> None:
    if not getattr(engine.backend, "supports_logprobs", False):
        raise APIError(f"{param}: logprobs are not supported by the {engine.backend.name!r} "
                       "backend (use --backend reference)", param=param,
                       code="unsupported_value")


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
