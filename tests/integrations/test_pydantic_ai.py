"""PydanticAI (`pydantic-ai-slim[openai]`) on a real `agentfast serve` (uvicorn on 127.0.0.1):
`OpenAIChatModel` with `OpenAIProvider(base_url=...)`, a run that calls a function tool then
answers with a typed output tool (both calls grammar-valid), and native structured output
(strict json_schema response_format)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import BaseModel

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.capabilities import AbstractCapability  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.output import NativeOutput, ToolOutput  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

pytestmark = pytest.mark.anyio


class Weather(BaseModel):
    city: str
    summary: str


@dataclass
class ToolThenAnswer(AbstractCapability):
    """Step 1 must call get_weather, step 2 must give the final (typed) answer: a 135M model
    needs the push, and the grammar makes both calls valid."""

    def get_model_settings(self):
        return lambda ctx: {"tool_choice": ["get_weather"] if ctx.run_step <= 1
                            else ["final_result"]}


@pytest.fixture
async def model(server_url):
    """Per test, with its own client, closed in the test's event loop (a client left open
    is collected later, in another test's loop, whose closing then fails)."""
    import openai

    client = openai.AsyncOpenAI(base_url=server_url, api_key="unused")
    yield OpenAIChatModel("smollm2", provider=OpenAIProvider(openai_client=client))
    await client.close()


async def test_tool_then_typed_output(model):
    calls: list[str] = []
    agent = Agent(model, output_type=ToolOutput(Weather), capabilities=[ToolThenAnswer()],
                  instructions="You report the weather.",
                  model_settings={"max_tokens": 64, "temperature": 0,
                                  "parallel_tool_calls": False})  # one call per step

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Gets the current weather of a city."""
        calls.append(city)
        return f"sunny in {city}"

    r = await agent.run("What is the weather in Paris?")
    assert len(calls) == 1
    assert isinstance(r.output, Weather)
    parts = [type(p).__name__ for m in r.all_messages() for p in m.parts]
    assert parts.count("ToolCallPart") == 2 and parts.count("ToolReturnPart") == 2
    assert r.usage.requests == 2 and r.usage.tool_calls == 1
    assert r.usage.cache_read_tokens > 0  # step 2 reused the session's KV


async def test_native_structured_output(model):
    agent = Agent(model, output_type=NativeOutput(Weather),
                  model_settings={"max_tokens": 40, "temperature": 0})
    r = await agent.run("The weather in Rome is rainy. Report it.")
    assert isinstance(r.output, Weather)
