"""agentfast: sequential agent loops at the speed of the GPU's memory.

The SDK namespace. `agentfast.engine` runs models, `agentfast.kernels` holds the Triton
kernels, `agentfast.spec_decode` the drafters, `agentfast.server` the OpenAI-compatible server.
`agentfast.AsyncOpenAI(engine=...)` and `agentfast.OpenAI(...)` are the official `openai`
clients served in process; they are imported on first use, so `import agentfast` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"AsyncOpenAI": "agentfast.server.inprocess", "OpenAI": "agentfast.server.inprocess",
         "Agent": "agentfast.agent", "tool": "agentfast.agent"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentfast' has no attribute {name!r}")
