"""Integration fixtures: the embedded model (SmolLM2-135M-Instruct) in process and behind a real
`agentfast serve`-style uvicorn server on 127.0.0.1 (a free port, a background thread). Every
integration module skips cleanly when its package is not installed (pytest.importorskip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentfast.engine import Engine


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def embedded_engine() -> Engine:
    from tiny_models import embedded_engine_or_skip

    return embedded_engine_or_skip()


def serve(app) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1:<free port> in a thread; yield its /v1 base URL."""
    from agentfast.server.background import serve_in_thread

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="session")
def server_url(embedded_engine) -> Iterator[str]:
    """`agentfast serve` on the embedded model, as the CLI builds it (create_app)."""
    from agentfast.server import create_app

    yield from serve(create_app(embedded_engine, model_name="smollm2", request_timeout=300))
