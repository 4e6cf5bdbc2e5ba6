"""The agent loop: `Agent`, `@tool`, the streamed events and the per-turn trace."""

from .agent import Agent, MaxTurnsExceeded, RunResult, Usage
from .events import RunFinished, TextDelta, ToolCallStarted, ToolResult, TurnFinished
from .tools import Tool, tool
from .trace import Trace, TurnTrace

__all__ = ["Agent", "MaxTurnsExceeded", "RunFinished", "RunResult", "TextDelta", "Tool",
           "ToolCallStarted", "ToolResult", "Trace", "TurnFinished", "TurnTrace", "Usage", "tool"]
