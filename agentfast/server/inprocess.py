"""The server without a socket: httpx transports that run the ASGI app in process and stream the
response body chunk by chunk as the app sends it (httpx's own ASGITransport buffers the whole
body, which would turn a stream into one late blob), and `AsyncOpenAI` / `OpenAI` factories
that hand the official `openai` clients such a transport.

    client = agentfast.AsyncOpenAI(engine=Engine.load())
    stream = await client.chat.completions.create(model="default", messages=..., stream=True)

Closing a response early tells the app the client disconnected, which cancels the generation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

BASE_URL = "http://agentfast.local/v1"


class _Body(httpx.AsyncByteStream):
    def __init__(self, q: asyncio.Queue, task: asyncio.Task, gone: asyncio.Event):
        self.q, self.task, self.gone = q, task, gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            msg = await self.q.get()
            if isinstance(msg, BaseException):
                raise msg
            if msg["type"] == "http.response.body":
                if msg.get("body"):
                    yield msg["body"]
                if not msg.get("more_body", False):
                    return

    async def aclose(self) -> None:
        self.gone.set()  # the app sees http.disconnect and cancels the generation
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=5.0)
        except (asyncio.TimeoutError, Exception):
            self.task.cancel()


class ASGIStreamTransport(httpx.AsyncBaseTransport):
    """Runs `app` for each request in the caller's event loop; the response arrives as soon as
    the app starts it, and its body as the app sends it."""

    def __init__(self, app: Any):
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        q: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()
        sent_body = False

        async def receive() -> dict:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict) -> None:
            if gone.is_set() and msg["type"] == "http.response.body":
                raise OSError("client disconnected")
            q.put_nowait(msg)

        url = request.url
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": request.method, "scheme": url.scheme,
            "path": url.path, "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query, "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, url.port or 80), "client": ("127.0.0.1", 0),
        }

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as e:
                q.put_nowait(e)  # reaches the reader unless the response already ended
                if not isinstance(e, Exception):
                    raise
            finally:
                gone.set()

        task = asyncio.ensure_future(run())
        while True:
            msg = await q.get()
            if isinstance(msg, BaseException):
                raise msg
            if msg["type"] == "http.response.start":
                break
        return httpx.Response(msg["status"], headers=msg.get("headers", []),
                              stream=_Body(q, task, gone), request=request)


class _LoopThread:
    """An event loop in a daemon thread, for the synchronous client."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="agentfast-inprocess",
                         daemon=True).start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, lt: _LoopThread, stream: httpx.AsyncByteStream):
        self.lt, self.it, self.stream = lt, stream.__aiter__(), stream

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.lt.run(self.it.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.lt.run(self.stream.aclose())


class SyncASGIStreamTransport(httpx.BaseTransport):
    """The same, for synchronous clients: the app runs in a background event loop."""

    def __init__(self, app: Any):
        self.inner, self.lt = ASGIStreamTransport(app), _LoopThread()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            return await self.inner.handle_async_request(request)

        r = self.lt.run(go())
        return httpx.Response(r.status_code, headers=r.headers,
                              stream=_SyncBody(self.lt, r.stream), request=request)


def http_client(app: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient bound to `app` (pass as `http_client=` to `openai.AsyncOpenAI`)."""
    return httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url=BASE_URL,
                             timeout=None)


def sync_http_client(app: Any) -> httpx.Client:
    return httpx.Client(transport=SyncASGIStreamTransport(app), base_url=BASE_URL, timeout=None)


def _app(engine: Any, app: Any, kw: dict) -> Any:
    if app is not None:
        return app
    from agentfast.engine import Engine

    from .app import create_app

    return create_app(engine if engine is not None else Engine.load(),
                      model_name=kw.pop("model_name", None))


def AsyncOpenAI(engine: Any = None, *, app: Any = None, **kw: Any):  # noqa: N802
    """An `openai.AsyncOpenAI` client served in process by `engine` (default: the embedded
    model) or by an `app` from `create_app`. Other keywords go to `openai.AsyncOpenAI`."""
    import openai

    a = _app(engine, app, kw)
    kw.setdefault("api_key", "agentfast")
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=BASE_URL, http_client=http_client(a), **kw)


def OpenAI(engine: Any = None, *, app: Any = None, **kw: Any):  # noqa: N802
    """The synchronous `openai.OpenAI` client, served in process (the app runs in a
    background event loop)."""
    import openai

    a = _app(engine, app, kw)
    kw.setdefault("api_key", "agentfast")
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=BASE_URL, http_client=sync_http_client(a), **kw)
