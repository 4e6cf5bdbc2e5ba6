"""The OpenAI Agents SDK (`openai-agents`) on agentfast: `OpenAIChatCompletionsModel` with the
in-process client `agentfast.AsyncOpenAI`, a run with a function tool (strict schema, so the
call is grammar-valid), a streamed run, and a typed final output (strict json_schema)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

agents = pytest.importorskip("agents")

import agentfast  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def model(embedded_engine):
    agents.set_tracing_disabled(True)  # no trace upload to OpenAI
    client = agentfast.AsyncOpenAI(engine=embedded_engine)
    return agents.OpenAIChatCompletionsModel(model="default", openai_client=client)


class City(BaseModel):
    name: str
    country: str


def weather_agent(model, calls: list):
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Gets the current weather of a city.

        Args:
            city: the city's name
        """
        calls.append(city)
        return f"sunny and 21 C in {city}"

    return agents.Agent(
        name="weather", instructions="You answer weather questions with the tool.",
        tools=[get_weather], model=model, tool_use_behavior="stop_on_first_tool",
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=48,
                                            temperature=0, parallel_tool_calls=False))


async def test_run_with_a_function_tool(model):
    calls: list[str] = []
    result = await agents.Runner.run(weather_agent(model, calls),
                                     "What is the weather in Paris?", max_turns=3)
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output == f"sunny and 21 C in {calls[0]}"
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"]
    usage = result.context_wrapper.usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0


async def test_streamed_run(model):
    calls: list[str] = []
    run = agents.Runner.run_streamed(weather_agent(model, calls), "Weather in Rome?",
                                     max_turns=3)
    raw, items = 0, []
    async for ev in run.stream_events():
        if ev.type == "raw_response_event":
            raw += 1
        elif ev.type == "run_item_stream_event":
            items.append(ev.name)
    assert raw > 2, "the model's output streams as deltas"
    assert items[:2] == ["tool_called", "tool_output"]
    assert calls and run.final_output == f"sunny and 21 C in {calls[0]}"


async def test_structured_output(model):
    agent = agents.Agent(name="geo", instructions="Answer with the city and its country.",
                         model=model, output_type=City,
                         model_settings=agents.ModelSettings(max_tokens=40, temperature=0))
    result = await agents.Runner.run(agent, "Which city is the capital of France?")
    assert isinstance(result.final_output, City)  # strict json_schema: always parses
