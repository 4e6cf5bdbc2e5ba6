"""A mini-swe-agent environment that runs the model's bash commands through agentfast's
restricted shell (agentfast.agent.coding: an allow-list of read-only commands, no shell syntax,
no network, confined to the workspace, a timeout), so a test can let a small model drive the
real `mini` CLI without running arbitrary commands on the machine. Loaded by mini with
`--environment-class mini_env.RestrictedEnvironment` (this folder on PYTHONPATH)."""

from __future__ import annotations

from typing import Any

from minisweagent.environments.local import LocalEnvironment

from agentfast.agent.coding import Workspace, WorkspaceError


class RestrictedEnvironment(LocalEnvironment):
    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None
                ) -> dict[str, Any]:
        ws = Workspace(cwd or self.config.cwd, shell_timeout=timeout or self.config.timeout)
        command = action.get("command", "")
        try:
            argv = ws.check_command(command)
        except WorkspaceError as e:
            return {"output": f"refused: {e}", "returncode": 126, "exception_info": ""}
        code, out = ws._exec(argv, ws.shell_timeout)
        output = {"output": out, "returncode": -1 if code is None else code,
                  "exception_info": "" if code is not None else "timed out"}
        self._check_finished(output)  # `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` ends the run
        return output
