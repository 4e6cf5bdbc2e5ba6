"""agentfast.server: the OpenAI-compatible HTTP server and its in-process twin.

`create_app(engine)` builds the FastAPI app (chat completions, completions, responses, models,
health, metrics); `agentfast serve` runs it with uvicorn; `inprocess` runs the same app without
a socket for the official `openai` clients. Needs the `server` extra (fastapi, uvicorn).
"""

from .app import create_app

__all__ = ["create_app"]
