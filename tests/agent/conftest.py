"""Agent fixtures: a scripted fake client (deterministic tool calls) and the tiny random engine
behind the in-process client (mechanics: sessions, KV reuse, strict tool calls)."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionChunk

from agentfast.engine import Engine


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [] if delta is None else
            [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}


class FakeClient:
    """Replays `script`: each turn is a str (the answer, streamed in two pieces) or a list of
    (name, arguments dict or raw str) tool calls. Records each request's keywords."""

    def __init__(self, script: list):
        self.script, self.requests = list(script), []
        self.chat = self
        self.completions = self

    async def create(self, **kw):
        self.requests.append(kw)
        step = self.script.pop(0)
        n = sum(len(json.dumps(m)) for m in kw["messages"])
        usage = {"prompt_tokens": n, "completion_tokens": 5, "total_tokens": n + 5,
                 "prompt_tokens_details": {"cached_tokens": n // 2 if len(self.requests) > 1
                                           else 0}}
        if isinstance(step, str):
            half = len(step) // 2
            chunks = [_chunk({"role": "assistant", "content": step[:half]}),
                      _chunk({"content": step[half:]}), _chunk({}, "stop")]
        else:
            chunks = [_chunk({"tool_calls": [{
                "index": i, "id": f"call_{i}", "type": "function",
                "function": {"name": name, "arguments": a if isinstance(a, str)
                             else json.dumps(a)}}]}) for i, (name, a) in enumerate(step)]
            chunks.append(_chunk({}, "tool_calls"))
        chunks.append(_chunk(None, usage=usage))

        async def gen():
            for c in chunks:
                yield ChatCompletionChunk.model_validate(c)

        return gen()


@pytest.fixture
def fake():
    return FakeClient


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory) -> Engine:
    from tiny_models import long_tiny_engine

    return long_tiny_engine(tmp_path_factory.mktemp("agent") / "llama")


@pytest.fixture(scope="session")
def embedded_engine() -> Engine:
    from tiny_models import embedded_engine_or_skip

    return embedded_engine_or_skip()
