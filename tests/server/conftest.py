"""Server fixtures: a tiny random engine (fast), the embedded model (a few tests), the app over
real HTTP (uvicorn in a background thread on a free port) and in process."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from agentfast.engine import Engine
from agentfast.server import create_app


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory) -> Engine:
    from tiny_models import long_tiny_engine

    return long_tiny_engine(tmp_path_factory.mktemp("server") / "llama")


@pytest.fixture(scope="session")
def app(tiny_engine):
    return create_app(tiny_engine, model_name="tiny", request_timeout=60)


def serve(app) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1:<free port> in a thread; yield its /v1 base URL."""
    from agentfast.server.background import serve_in_thread

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="session")
def base_url(app) -> Iterator[str]:
    yield from serve(app)


@pytest.fixture(scope="session")
def client(base_url):
    import openai

    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def embedded_engine() -> Engine:
    from tiny_models import embedded_engine_or_skip

    return embedded_engine_or_skip()


@pytest.fixture(scope="session")
def constraints():
    """Skips when the engine has no structured outputs yet (agentfast.engine.constraints)."""
    import dataclasses

    from agentfast.engine import SamplingParams

    if importlib.util.find_spec("agentfast.engine.constraints") is None or (
            "constraint" not in {f.name for f in dataclasses.fields(SamplingParams)}):
        pytest.skip("agentfast.engine.constraints is not there yet")
