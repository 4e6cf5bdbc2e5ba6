"""`agentfast serve`: options reach the app (uvicorn.run is replaced by an in-process call)."""

from __future__ import annotations

import uvicorn

import agentfast
from agentfast.cli import main


def test_serve_builds_the_app_from_options(monkeypatch, tiny_engine):
    seen = {}

    def fake_run(app, host, port, log_level):
        seen.update(app=app, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    folder = str(tiny_engine.model.source)
    assert main(["serve", "-m", folder, "--port", "9123", "--device", "cpu", "--max-context",
                 "256", "--request-timeout", "5", "--model-name", "mini"]) == 0
    st = seen["app"].state.agentfast
    assert (seen["host"], seen["port"], st.model, st.timeout) == ("127.0.0.1", 9123, "mini", 5)
    assert st.engine.max_context == 256
    client = agentfast.OpenAI(app=seen["app"])
    r = client.chat.completions.create(model="mini", messages=[{"role": "user", "content": "x"}],
                                       max_tokens=3, temperature=0)
    assert r.model == "mini" and r.usage.completion_tokens >= 1
