"""Coding tools confined to one workspace folder: read_file, write_file, edit (search/replace),
list_dir, run_tests (pytest, with a timeout) and a restricted shell (an allow-list of read-only
commands, no shell syntax, no network, a timeout).

Every path a tool receives, relative or absolute, is resolved with its symlinks and `..` and
must land inside the workspace; otherwise the tool raises `WorkspaceError`, which the agent
loop hands back to the model as the tool's result ("Error: read_file raised WorkspaceError:
...") instead of touching the file. Knows nothing of the model or the agent loop.

    tools = workspace_tools("/path/to/repo")          # -> list[Tool], for Agent(tools=...)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import anyio

from .tools import Tool, tool

MAX_OUTPUT = 8000  # characters of a file or of a command's output the model gets back
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".venv",
             "node_modules"}
# Read-only commands the shell tool runs; anything else is refused. No interpreter (python -c
# could open any path), nothing that writes or reaches the network.
SHELL_ALLOW = frozenset({"ls", "cat", "head", "tail", "wc", "grep", "find", "diff", "echo",
                         "pwd", "sort", "uniq", "cut", "tr", "git"})
GIT_ALLOW = frozenset({"status", "diff", "log", "show", "ls-files", "grep"})
NETWORK = frozenset({"curl", "wget", "ssh", "scp", "sftp", "rsync", "nc", "ncat", "netcat",
                     "telnet", "ftp", "ping", "dig", "nslookup", "host", "pip", "pip3", "npm",
                     "apt", "apt-get", "git-remote-http"})
FIND_DENY = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprintf",
                       "-fls", "-fprint0"})
SHELL_SYNTAX = ("|", ";", "&", ">", "<", "`", "$(", "\n")


class WorkspaceError(PermissionError):
    """A path outside the workspace, or a command the restricted shell does not run."""


def _clip(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit // 2] + f"\n... [{len(text) - limit} characters cut] ...\n" + \
        text[-limit // 2:]


class Workspace:
    """A folder the tools may not leave."""

    def __init__(self, root: str | os.PathLike, test_timeout: float = 60.0,
                 shell_timeout: float = 10.0):
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise NotADirectoryError(f"the workspace {root} is not a folder")
        self.test_timeout, self.shell_timeout = test_timeout, shell_timeout

    def resolve(self, path: str) -> Path:
        """`path` (relative to the workspace, or absolute) with symlinks and `..` resolved;
        WorkspaceError unless it lies inside the workspace."""
        if not isinstance(path, str) or "\x00" in path:
            raise WorkspaceError(f"invalid path {path!r}")
        p = Path(os.path.expanduser(path)) if path.startswith("~") else Path(path)
        real = Path(os.path.realpath(p if p.is_absolute() else self.root / p))
        if real != self.root and self.root not in real.parents:
            raise WorkspaceError(f"the path {path!r} is outside the workspace {self.root} "
                                 "(paths are relative to the workspace; .. and symlinks that "
                                 "lead out are refused)")
        return real

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.root)) if p != self.root else "."

    # ---- the tools (plain methods; `tools()` wraps them) -----------------------------------

    def read_file(self, path: str) -> str:
        """Reads a text file of the workspace and returns its content with line numbers.

        Args:
            path: the file's path, relative to the workspace root
        """
        p = self.resolve(path)
        if not p.is_file():
            raise FileNotFoundError(f"no file {path!r} in the workspace")
        lines = p.read_text(errors="replace").splitlines()
        return _clip("\n".join(f"{i:4d}| {line}" for i, line in enumerate(lines, 1))
                     or "(empty file)")

    def write_file(self, path: str, content: str) -> str:
        """Writes a whole file (creating it and its folders if needed), replacing any content.

        Args:
            path: the file's path, relative to the workspace root
            content: the complete new content of the file
        """
        p = self.resolve(path)
        if p.is_dir():
            raise IsADirectoryError(f"{path!r} is a folder")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        return f"wrote {len(content)} characters to {self.rel(p)}"

    def edit(self, path: str, search: str, replace: str) -> str:
        """Replaces one exact occurrence of `search` in a file by `replace`.

        Args:
            path: the file's path, relative to the workspace root
            search: the exact text to find; it must occur exactly once in the file
            replace: the text to put in its place
        """
        p = self.resolve(path)
        if not p.is_file():
            raise FileNotFoundError(f"no file {path!r} in the workspace")
        if not search:
            raise ValueError("search must not be empty")
        text = p.read_text()
        n = text.count(search)
        if n != 1:
            raise ValueError(f"search text found {n} times in {self.rel(p)}; it must occur "
                             "exactly once (add surrounding lines to make it unique)")
        p.write_text(text.replace(search, replace, 1))
        return f"edited {self.rel(p)}: replaced {len(search)} characters with {len(replace)}"

    def list_dir(self, path: str) -> str:
        """Lists the files under a folder of the workspace (recursively, folders end in /).

        Args:
            path: the folder, relative to the workspace root ("." for the root)
        """
        p = self.resolve(path or ".")
        if not p.is_dir():
            raise NotADirectoryError(f"{path!r} is not a folder of the workspace")
        out: list[str] = []
        for d, dirs, files in os.walk(p):
            dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info"))
            base = Path(d)
            out += [self.rel(base / x) + "/" for x in dirs]
            out += [self.rel(base / x) for x in sorted(files) if not x.endswith(".pyc")]
            if len(out) > 300:
                out.append("... (more)")
                break
        return "\n".join(sorted(out)) or "(empty folder)"

    def run_tests(self, path: str) -> str:
        """Runs the workspace's tests with pytest and returns the outcome and the output's end.

        Args:
            path: a test file or folder, relative to the workspace root ("" for all tests)
        """
        return self._tests_report(*self._exec(self._tests_argv(path), self.test_timeout))

    def shell(self, command: str) -> str:
        """Runs one read-only command in the workspace (no pipes or redirections). Allowed:
        ls, cat, head, tail, wc, grep, find, diff, echo, pwd, sort, uniq, cut, tr and git
        status/diff/log/show/ls-files/grep.

        Args:
            command: the command line, e.g. "grep -n def src/app.py"
        """
        return self._shell_report(*self._exec(self.check_command(command), self.shell_timeout))

    # the tools' run_tests and shell: the same, the process awaited on the event loop (no
    # worker thread to hop to and back)

    async def _run_tests_async(self, path: str) -> str:
        return self._tests_report(*await self._aexec(self._tests_argv(path), self.test_timeout))

    async def _shell_async(self, command: str) -> str:
        return self._shell_report(*await self._aexec(self.check_command(command),
                                                     self.shell_timeout))

    # ---- helpers ----------------------------------------------------------------------------

    def check_command(self, command: str) -> list[str]:
        """The argv of an allowed command; WorkspaceError naming the reason otherwise."""
        if any(s in command for s in SHELL_SYNTAX):
            raise WorkspaceError("pipes, redirections, ;, &, ` and $( ) are not allowed; run "
                                 "one command")
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise WorkspaceError(f"cannot parse the command: {e}") from None
        if not argv:
            raise WorkspaceError("empty command")
        name = argv[0]
        if name in NETWORK:
            raise WorkspaceError(f"{name}: network commands are not allowed")
        if name not in SHELL_ALLOW:
            raise WorkspaceError(f"{name}: not an allowed command (allowed: "
                                 f"{', '.join(sorted(SHELL_ALLOW))}); use the file tools and "
                                 "run_tests for the rest")
        if name == "git" and (len(argv) < 2 or argv[1] not in GIT_ALLOW):
            raise WorkspaceError(f"git: only {', '.join(sorted(GIT_ALLOW))} are allowed")
        if name == "find" and (bad := FIND_DENY.intersection(argv)):
            raise WorkspaceError(f"find: {', '.join(sorted(bad))} not allowed")
        for a in argv[1:]:
            value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else a
            if value.startswith("-") or not value:
                continue
            if ("/" in value or value.startswith((".", "~"))
                    or (self.root / value).exists()):
                self.resolve(value)
        return argv

    def _tests_argv(self, path: str) -> list[str]:
        args = [sys.executable, "-m", "pytest", "-q", "-x", "--no-header", "-p",
                "no:cacheprovider"]
        if path:
            args.append(self.rel(self.resolve(path)))
        return args

    def _tests_report(self, code: int | None, out: str) -> str:
        status = {0: "all tests passed", 1: "some tests failed", 5: "no tests were collected",
                  None: f"timed out after {self.test_timeout:g} s"}.get(code, f"exit code {code}")
        return f"pytest: {status}\n{_clip(out, 4000)}"

    def _shell_report(self, code: int | None, out: str) -> str:
        if code is None:
            return f"timed out after {self.shell_timeout:g} s\n{_clip(out)}"
        return f"exit code {code}\n{_clip(out)}"

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "GIT_TERMINAL_PROMPT": "0",
                "NO_PROXY": "*", "PYTHONPATH": str(self.root)}

    def _exec(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """(exit code or None on timeout, stdout+stderr); the process group is killed on
        timeout."""
        proc = subprocess.Popen(argv, cwd=self.root, env=self._env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")

    async def _aexec(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """_exec on the event loop: the same result, the process group killed on timeout (and
        when the caller is cancelled)."""
        proc = await anyio.open_process(argv, cwd=self.root, env=self._env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        out = bytearray()

        async def read() -> None:
            assert proc.stdout is not None
            async for chunk in proc.stdout:
                out.extend(chunk)
            await proc.wait()

        async with proc:
            try:
                with anyio.move_on_after(timeout) as scope:
                    await read()
                if scope.cancelled_caught:
                    _kill_group(proc.pid)
                    await read()  # what it wrote before
                    return None, out.decode(errors="replace")
            except BaseException:
                _kill_group(proc.pid)
                raise
        return proc.returncode, out.decode(errors="replace")

    def tools(self, names: tuple[str, ...] | None = None) -> list[Tool]:
        """The tools, as `Tool`s bound to this workspace (all six unless `names`). The file
        tools are quick and run inline on the event loop; run_tests and shell await their
        process there (async twins of the methods, same schema and description)."""
        names = names or ("read_file", "write_file", "edit", "list_dir", "run_tests", "shell")
        twins = {"run_tests": self._run_tests_async, "shell": self._shell_async}
        return [dataclasses.replace(tool(getattr(self, n), name=n), fn=twins[n]) if n in twins
                else tool(getattr(self, n), name=n, inline=True) for n in names]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)


def workspace_tools(root: str | os.PathLike, **kw: float) -> list[Tool]:
    """The six coding tools confined to `root` (test_timeout=, shell_timeout= in seconds)."""
    return Workspace(root, **kw).tools()
