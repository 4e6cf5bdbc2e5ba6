"""POST /v1/completions: a raw prompt (text or token ids), no chat template, no tools.

The session is the `x-session-id` header, the `user` field, or the prompt's first tokens, so
a prompt that extends an earlier one reuses its KV cache.
"""

from __future__ import annotations

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from . import logprobs as lp
from .app import State, _logprobs_n, check_model, guard, start
from .params import max_new_tokens, reject_unsupported, sampling
from .protocol import APIError, Completion, CompletionChoice, CompletionRequest
from .scheduler import Work
from .streaming import EventStream, collect, completion_stream, finish_reason, turn, usage_of


def completion_ids(st: State, req: CompletionRequest) -> list[int]:
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], str | list):
        if len(p) != 1:
            raise APIError("prompt: one prompt per request (batches are not supported)",
                           param="prompt", code="unsupported_value")
        p = p[0]
    ids = st.engine.tokenizer.encode(p, add_special=True) if isinstance(p, str) else list(p)
    vocab = st.engine.tokenizer.vocab_size
    if not ids or any(not 0 <= t < vocab for t in ids):
        raise APIError(f"prompt: empty, or a token id outside [0, {vocab})", param="prompt")
    return ids


async def completion(st: State, request: Request, req: CompletionRequest) -> Response:
    check_model(st, req.model)
    reject_unsupported(req, echo=not req.echo, suffix=not req.suffix,
                       best_of=(req.best_of or 1) == 1)
    top_n = _logprobs_n(st, req.logprobs is not None, req.logprobs, "logprobs", 5)
    ids = await anyio.to_thread.run_sync(completion_ids, st, req)
    max_new = max_new_tokens(req.max_tokens, "max_tokens", len(ids), st.engine.max_context,
                             prompt_field="prompt")
    params = sampling(req, max_new)
    sid = request.headers.get("x-session-id") or req.user or f"p:{hash(tuple(ids[:256]))}"
    job, steps = await start(st, request, Work(ids, params, sid, top_n), lambda r: None)
    meta = st.meta("cmpl-")
    tok = st.engine.tokenizer
    fmt = (lambda x, o=0: lp.completion_logprobs(tok, x, o)) if top_n is not None else None
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventStream(completion_stream(turn(steps, None), meta, usage, fmt), job)
    c = await guard(request, job, collect(turn(steps, None)))
    choice = CompletionChoice(text=c.content, finish_reason=finish_reason(c.result, False),
                              logprobs=fmt(c.logprobs) if fmt else None)
    return JSONResponse(Completion(**meta, choices=[choice], usage=usage_of(c.result))
                        .model_dump())
