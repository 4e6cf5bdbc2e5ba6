"""What `Agent.run_stream` yields, in order: per turn, TextDelta* and then, when the model called
tools, ToolCallStarted* (in call order) and ToolResult* (as each tool finishes: a fast tool's
result comes before a slow one's); then TurnFinished. The last event is RunFinished.
Plain dataclasses; they know nothing of the client or the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import RunResult
    from .trace import TurnTrace


@dataclass(frozen=True)
class TextDelta:
    turn: int
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    turn: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    turn: int
    call_id: str
    name: str
    output: str
    ok: bool
    seconds: float  # the tool function's own run time (0 where it never ran)


@dataclass(frozen=True)
class TurnFinished:
    turn: int
    trace: TurnTrace
    tool_calls: int


@dataclass(frozen=True)
class RunFinished:
    result: RunResult
    output: Any = None
