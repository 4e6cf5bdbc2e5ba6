"""The OpenAI-compatible HTTP app: `create_app(engine)`.

Routes: POST /v1/chat/completions, /v1/completions, /v1/responses; GET /v1/models, /health,
/metrics. Each generation request is parsed (pydantic), checked, turned into prompt tokens and
`SamplingParams`, queued on the engine's scheduler (one request at a time, FIFO) and answered
as one JSON object or as server-sent events. Every failure is an OpenAI error object with a 4xx
(the request's fault) or 5xx (ours), and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

import agentfast
from agentfast.engine import Engine
from agentfast.engine.errors import AgentfastError, ContextLengthError

from . import logprobs as lp
from .chat import PromptCache, build_prompt, template_formats
from .params import (
    constraint_for,
    max_new_tokens,
    precompile,
    reject_unsupported,
    sampling,
    tool_choice_of,
    tool_dicts,
)
from .protocol import (
    APIError,
    ChatChoice,
    ChatCompletion,
    ChatRequest,
    CompletionRequest,
    FunctionCall,
    OutMessage,
    ToolCall,
    new_id,
    now,
    validation_error,
)
from .scheduler import Job, Scheduler, Work, scheduler_for
from .streaming import (
    EventStream,
    chat_stream,
    collect,
    finish_reason,
    prepend,
    tap,
    turn,
    usage_of,
)
from .tool_parser import HERMES_CLOSE, ToolParser

M = TypeVar("M", bound=BaseModel)
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/health",
          "/metrics")


@dataclass
class State:
    engine: Engine
    scheduler: Scheduler
    model: str
    aliases: tuple[str, ...]
    timeout: float | None
    cache: PromptCache = field(default_factory=PromptCache)

    @property
    def fingerprint(self) -> str:
        return f"agentfast-{agentfast.__version__}-{self.engine.backend.name}"

    def meta(self, prefix: str) -> dict[str, Any]:
        return {"id": new_id(prefix), "created": now(), "model": self.model,
                "system_fingerprint": self.fingerprint}


def default_model_name(engine: Engine) -> str:
    src = Path(str(getattr(engine.model, "source", "model")))
    return src.stem if src.suffix == ".gguf" else src.name


def create_app(engine: Engine, model_name: str | None = None,
               request_timeout: float | None = 600.0,
               response_store_size: int = 256) -> FastAPI:
    """An ASGI app serving `engine`. Requests may name the model `model_name` (default: the
    checkpoint's name) or "default"; `request_timeout` bounds queueing + generation (seconds);
    `response_store_size`: finished /v1/responses kept for previous_response_id."""
    name = model_name or default_model_name(engine)
    st = State(engine, scheduler_for(engine), name, (name, "default", "agentfast"),
               request_timeout)
    app = FastAPI(title="agentfast", version=agentfast.__version__, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.agentfast = st
    app.add_middleware(_CountResponses, metrics=st.scheduler.metrics)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> Response:
        return error_response(e)

    @app.exception_handler(AgentfastError)
    async def _engine_error(_: Request, e: AgentfastError) -> Response:
        code = "context_length_exceeded" if isinstance(e, ContextLengthError) else None
        return error_response(APIError(str(e), code=code))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException) -> Response:
        return error_response(APIError(str(e.detail), status=e.status_code,
                                       type="invalid_request_error"))

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, e: ClientGone) -> Response:
        return Response(status_code=499)  # nobody is listening; nginx's "client closed"

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> Response:
        return error_response(APIError(f"internal error: {type(e).__name__}: {e}", status=500,
                                       type="server_error"))

    @app.get("/health")
    async def health() -> dict:
        m = st.scheduler.metrics
        return {"status": "ok", "model": st.model, "backend": engine.backend.name,
                "queue_depth": m.queued, "running": m.running}

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(st.scheduler.metrics.render(),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": st.model, "object": "model", "created": 0,
                                            "owned_by": "agentfast",
                                            "max_model_len": engine.max_context}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _chat(st, request, await parse(request, ChatRequest))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        from .completions import completion

        return await completion(st, request, await parse(request, CompletionRequest))

    from .responses import add_routes

    add_routes(app, st, response_store_size)
    return app


class _CountResponses:
    """Counts responses by path and status for /metrics (pure ASGI: streams pass through)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(msg):
            if msg["type"] == "http.response.start":
                path = scope["path"] if scope["path"] in ROUTES else "other"
                self.metrics.request(path, msg["status"])
            await send(msg)

        await self.app(scope, receive, counting_send)


def error_response(e: APIError) -> Response:
    # x-should-retry: the openai client would otherwise retry 408s and 5xxs by itself.
    return JSONResponse(e.body(), status_code=e.status, headers={"x-should-retry": "false"})


async def parse(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


def check_model(st: State, model: str) -> None:
    if model not in st.aliases:
        raise APIError(f"model: {model!r} does not exist; this server serves {st.model!r}",
                       status=404, param="model", code="model_not_found")


class ClientGone(Exception):
    pass


async def guard(request: Request, job: Job, awaitable: Any) -> Any:
    """Await `awaitable` unless the client disconnects first (then cancel the job)."""
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    job.cancel()
    raise ClientGone


async def start(st: State, request: Request, work: Work, on_done) -> tuple[Job, Any]:
    """Queue `work`; wait for its first step (so early errors get a status code)."""
    job = st.scheduler.submit(work, st.timeout)
    steps = tap(job.events(), on_done)
    first = await guard(request, job, steps.__anext__())
    return job, prepend(first, steps)


def _logprobs_n(st: State, enabled: bool, n: int | None, field: str, limit: int) -> int | None:
    if n is not None and not 0 <= n <= limit:
        raise APIError(f"{field}: must be between 0 and {limit}, got {n}", param=field)
    if not enabled:
        if n and field == "top_logprobs":
            raise APIError("top_logprobs: requires logprobs=true", param="top_logprobs")
        return None
    lp.check_supported(st.engine, "logprobs")
    return n or 0


async def _chat(st: State, request: Request, req: ChatRequest) -> Response:
    check_model(st, req.model)
    reject_unsupported(req)
    eng, tok = st.engine, st.engine.tokenizer
    tools = tool_dicts(req.tools)
    mode, name = tool_choice_of(req.tool_choice)
    top_n = _logprobs_n(st, bool(req.logprobs), req.top_logprobs, "top_logprobs",
                        lp.MAX_TOP_LOGPROBS)
    parallel = req.parallel_tool_calls is not False
    constraint, cparam = constraint_for(tools, mode, name, req.response_format,
                                        parallel=parallel)
    await anyio.to_thread.run_sync(precompile, eng, constraint, cparam)
    header = request.headers.get("x-session-id")
    prompt = await anyio.to_thread.run_sync(build_prompt, tok, st.cache, req.messages,
                                            tools or None, req.user, header)
    field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_new = max_new_tokens(req.max_completion_tokens or req.max_tokens, field,
                             len(prompt.ids), eng.max_context)
    parse_tools = bool(tools) and mode != "none"
    stops = (HERMES_CLOSE,) if parse_tools and not parallel else ()
    params = sampling(req, max_new, stops, constraint)
    parser = ToolParser(template_formats(tok.chat_template)[1], parallel) if parse_tools else None
    work = Work(prompt.ids, params, prompt.session, top_n)
    job, steps = await start(st, request, work,
                             lambda r: st.cache.after(tok, prompt, r.token_ids, r.stop))
    meta = st.meta("chatcmpl-")
    fmt = (lambda x: lp.chat_content(tok, x)) if top_n is not None else None
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventStream(chat_stream(turn(steps, parser), meta, usage, fmt), job)
    c = await guard(request, job, collect(turn(steps, parser)))
    r = c.result
    calls = [ToolCall(id=x["id"], function=FunctionCall(name=x["name"],
                                                        arguments=x["arguments"]))
             for x in c.calls] or None
    msg = OutMessage(content=c.content if c.content or not calls else None, tool_calls=calls)
    choice = ChatChoice(message=msg, finish_reason=finish_reason(r, bool(calls)),
                        logprobs={"content": fmt(c.logprobs), "refusal": None} if fmt else None)
    body = ChatCompletion(**meta, choices=[choice], usage=usage_of(r))
    return JSONResponse(body.model_dump(exclude_none=False))
