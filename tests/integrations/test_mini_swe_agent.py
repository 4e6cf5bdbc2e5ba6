"""mini-swe-agent's `mini` CLI, headless (--yolo, --exit-immediately, no stdin), against a real
`agentfast serve` on 127.0.0.1 through litellm's OpenAI provider (`openai/<model>` with
`api_base`): the embedded model's tool calls (forced with tool_choice=required, so each step
is a grammar-valid `bash` call) reach mini's agent loop, run in the environment (agentfast's
restricted shell, confined to a copy of an example task) and come back as observations, until
the step limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")  # no banner when the import runs here
pytest.importorskip("minisweagent")

HERE = Path(__file__).resolve().parent
TASK = HERE.parents[1] / "examples" / "tasks" / "fizzbuzz"


def test_mini_headless_against_agentfast_serve(server_url, tmp_path):
    ws = tmp_path / "fizzbuzz"
    shutil.copytree(TASK, ws)
    traj = tmp_path / "traj.json"
    env = {**os.environ, "MSWEA_CONFIGURED": "1", "MSWEA_SILENT_STARTUP": "1",
           "MSWEA_GLOBAL_CONFIG_DIR": str(tmp_path / "mswea"),
           "MSWEA_COST_TRACKING": "ignore_errors",  # a local model has no price
           "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm: no cost-map download
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "minisweagent.run.mini", "--yolo", "--exit-immediately",
           "--agent-class", "default", "--environment-class", "mini_env.RestrictedEnvironment",
           "-m", "openai/smollm2", "-t", (ws / "task.md").read_text(), "-o", str(traj),
           "-c", "mini.yaml", "-c", f"environment.cwd={ws}", "-c", "agent.step_limit=2",
           "-c", f"model.model_kwargs.api_base={server_url}",
           "-c", "model.model_kwargs.api_key=unused",
           "-c", "model.model_kwargs.temperature=0", "-c", "model.model_kwargs.max_tokens=48",
           "-c", "model.model_kwargs.tool_choice=required"]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=600)
    assert traj.is_file(), f"mini wrote no trajectory:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    data = json.loads(traj.read_text())
    info, messages = data["info"], data["messages"]
    assert info["exit_status"] in ("LimitsExceeded", "Submitted"), info
    calls = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    observations = [m for m in messages if m.get("role") == "tool"]
    assert calls and len(observations) >= len(calls[0]["tool_calls"])
    for m in calls:
        for c in m["tool_calls"]:
            assert c["function"]["name"] == "bash"
            assert isinstance(json.loads(c["function"]["arguments"])["command"], str)
    for o in observations:  # mini.yaml's observation template: JSON with the return code
        assert isinstance(json.loads(o["content"])["returncode"], int)
    # the task folder copy is where commands ran; nothing escaped it
    assert (ws / "fizzbuzz.py").read_text() == (TASK / "fizzbuzz.py").read_text()
