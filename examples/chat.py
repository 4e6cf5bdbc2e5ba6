"""A minimal agent on the embedded model: one tool, the streamed answer, the per-turn trace.

    python examples/chat.py "What is the weather in Paris?"
"""

from __future__ import annotations

import sys
from typing import Literal

import anyio

import agentfast
from agentfast.agent import RunFinished, TextDelta, ToolCallStarted, ToolResult


@agentfast.tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Gets the current weather of a city.

    Args:
        city: the city's name, e.g. Paris
        unit: the temperature unit
    """
    return f"Sunny, 21 degrees {unit} in {city}."


async def main(task: str) -> None:
    agent = agentfast.Agent(instructions="You are a helpful assistant. Use tools when useful.",
                            tools=[get_weather], max_turns=4,
                            settings={"max_tokens": 64, "temperature": 0})
    # a small model rarely calls tools unprompted: force a call on turn 1 (strict: it validates)
    async for ev in agent.run_stream(task, first_tool_choice="required"):
        if isinstance(ev, TextDelta):
            print(ev.text, end="", flush=True)
        elif isinstance(ev, ToolCallStarted):
            print(f"\n[call {ev.name}({ev.arguments})]", flush=True)
        elif isinstance(ev, ToolResult):
            print(f"[result {ev.output}]", flush=True)
        elif isinstance(ev, RunFinished):
            print("\n\n" + ev.result.trace.summary())


if __name__ == "__main__":
    anyio.run(main, " ".join(sys.argv[1:]) or "What is the weather in Paris, in celsius?")
