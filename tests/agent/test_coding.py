"""The coding tools: workspace confinement (.., absolute paths, symlinks), edit, list_dir,
run_tests (outcome, timeout) and the restricted shell; errors reach the model as tool results."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from agentfast.agent.coding import Workspace, WorkspaceError

pytestmark = pytest.mark.anyio


@pytest.fixture
def ws(tmp_path) -> Workspace:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (root / "notes.txt").write_text("alpha\nbeta\nalpha\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "outdir").mkdir()
    (root / "link_out").symlink_to(tmp_path / "secret.txt")
    (root / "dir_out").symlink_to(tmp_path / "outdir", target_is_directory=True)
    (root / "link_in").symlink_to(root / "notes.txt")
    return Workspace(root, test_timeout=20, shell_timeout=5)


@pytest.mark.parametrize("path", ["../secret.txt", "pkg/../../secret.txt", "link_out",
                                  "dir_out/new.txt", "/etc/passwd", "~/x", "/"])
def test_paths_outside_are_refused(ws, path):
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.resolve(path)


def test_paths_inside_are_allowed(ws):
    assert ws.resolve("pkg/../notes.txt") == ws.root / "notes.txt"
    assert ws.resolve(str(ws.root / "pkg" / "mod.py")) == ws.root / "pkg" / "mod.py"
    assert ws.resolve("link_in") == ws.root / "notes.txt"
    assert ws.resolve("new/file.py") == ws.root / "new" / "file.py"
    assert ws.resolve(".") == ws.root


async def test_refusals_are_tool_results_and_nothing_leaks(ws, tmp_path):
    tools = {t.name: t for t in ws.tools()}
    out, ok = await tools["read_file"].call(json.dumps({"path": "../secret.txt"}), 5)
    assert not ok and out.startswith("Error: read_file raised WorkspaceError: the path "
                                     "'../secret.txt' is outside the workspace")
    out, ok = await tools["write_file"].call(json.dumps({"path": "dir_out/x.txt",
                                                         "content": "pwned"}), 5)
    assert not ok and "outside the workspace" in out
    out, ok = await tools["edit"].call(json.dumps({"path": "link_out", "search": "outside",
                                                   "replace": "pwned"}), 5)
    assert not ok and "outside the workspace" in out
    assert (tmp_path / "secret.txt").read_text() == "outside"
    assert list((tmp_path / "outdir").iterdir()) == []


def test_read_write_edit(ws):
    assert ws.read_file("pkg/mod.py") == "   1| def f():\n   2|     return 1"
    assert ws.write_file("src/new.py", "x = 1\n") == "wrote 6 characters to src/new.py"
    assert (ws.root / "src" / "new.py").read_text() == "x = 1\n"
    assert ws.edit("pkg/mod.py", "return 1", "return 2").startswith("edited pkg/mod.py")
    assert (ws.root / "pkg" / "mod.py").read_text() == "def f():\n    return 2\n"
    with pytest.raises(ValueError, match="found 2 times"):
        ws.edit("notes.txt", "alpha", "gamma")
    with pytest.raises(ValueError, match="found 0 times"):
        ws.edit("notes.txt", "delta", "gamma")
    with pytest.raises(FileNotFoundError):
        ws.read_file("missing.py")


def test_list_dir(ws):
    listing = ws.list_dir(".").splitlines()
    assert "pkg/" in listing and "pkg/mod.py" in listing and "notes.txt" in listing
    assert not any(x.startswith(".git") for x in listing)
    assert ws.list_dir("pkg") == "pkg/mod.py"
    with pytest.raises(WorkspaceError):
        ws.list_dir("dir_out")


def test_run_tests_outcomes_and_timeout(ws):
    (ws.root / "test_ok.py").write_text("from pkg.mod import f\n\ndef test_f():\n"
                                        "    assert f() == 1\n")
    assert ws.run_tests("test_ok.py").startswith("pytest: all tests passed")
    (ws.root / "test_bad.py").write_text("def test_bad():\n    assert 1 == 2\n")
    out = ws.run_tests("test_bad.py")
    assert out.startswith("pytest: some tests failed") and "assert 1 == 2" in out
    with pytest.raises(WorkspaceError):
        ws.run_tests("../secret.txt")
    (ws.root / "test_slow.py").write_text("import time\n\ndef test_slow():\n"
                                          "    time.sleep(30)\n")
    quick = Workspace(ws.root, test_timeout=1.5)
    t0 = time.perf_counter()
    assert quick.run_tests("test_slow.py").startswith("pytest: timed out after 1.5 s")
    assert time.perf_counter() - t0 < 10


def test_shell_allows_read_only_commands(ws):
    assert ws.shell("grep -n alpha notes.txt") == "exit code 0\n1:alpha\n3:alpha\n"
    assert ws.shell("ls pkg").startswith("exit code 0\nmod.py")
    assert ws.shell("wc -l notes.txt").split("\n")[1].split()[0] == "3"


@pytest.mark.parametrize("command, reason", [
    ("curl http://example.com", "network commands are not allowed"),
    ("wget x", "network commands are not allowed"),
    ("python -c 'print(1)'", "not an allowed command"),
    ("rm -rf pkg", "not an allowed command"),
    ("bash -c ls", "not an allowed command"),
    ("cat ../secret.txt", "outside the workspace"),
    ("cat /etc/passwd", "outside the workspace"),
    ("cat link_out", "outside the workspace"),
    ("grep --file=/etc/passwd x notes.txt", "outside the workspace"),
    ("ls | wc", "pipes"),
    ("ls; rm notes.txt", "pipes"),
    ("echo x > notes.txt", "pipes"),
    ("echo $(id)", "pipes"),
    ("find . -delete", "-delete not allowed"),
    ("find . -exec rm {} +", "-exec not allowed"),
    ("git push origin main", "git: only"),
    ("", "empty command"),
])
def test_shell_refuses(ws, command, reason):
    with pytest.raises(WorkspaceError, match=reason):
        ws.shell(command)
    assert (ws.root / "notes.txt").exists() and (ws.root / "pkg").is_dir()


def test_shell_timeout(ws):
    slow = Workspace(ws.root, shell_timeout=0.5)  # tail -f never ends by itself
    t0 = time.perf_counter()
    assert slow.shell("tail -f notes.txt").startswith("timed out after 0.5 s")
    assert time.perf_counter() - t0 < 5


def test_tools_schema():
    ws = Workspace(os.getcwd())
    names = [t.name for t in ws.tools()]
    assert names == ["read_file", "write_file", "edit", "list_dir", "run_tests", "shell"]
    for t in ws.tools():
        p = t.parameters
        assert p["additionalProperties"] is False and p["required"] == list(p["properties"])
        assert t.description and all(v.get("description") for v in p["properties"].values())


def test_workspace_must_exist(tmp_path):
    with pytest.raises(NotADirectoryError):
        Workspace(tmp_path / "nope")


async def test_tools_run_on_the_loop_and_answer_as_the_methods(ws, monkeypatch):
    """The file tools run inline, run_tests and shell await their process on the event loop
    (async twins): the same text as the methods, timeouts included; a call cut by the agent's
    timeout kills the process group."""
    tools = {t.name: t for t in ws.tools()}
    assert all(tools[n].inline for n in ("read_file", "write_file", "edit", "list_dir"))
    assert tools["run_tests"].is_async and tools["shell"].is_async
    (ws.root / "test_ok.py").write_text("from pkg.mod import f\n\ndef test_f():\n"
                                        "    assert f() == 1\n")
    def same(out: str) -> str:  # pytest's duration differs from run to run
        return re.sub(r" in \d+\.\d+s", " in (s)", out)

    for name, args, method in [("run_tests", {"path": "test_ok.py"}, ws.run_tests),
                               ("shell", {"command": "grep -n alpha notes.txt"}, ws.shell),
                               ("list_dir", {"path": "pkg"}, ws.list_dir)]:
        out, ok = await tools[name].call(json.dumps(args), 30)
        assert ok and same(out) == same(method(**args))
    slow = {t.name: t for t in Workspace(ws.root, shell_timeout=0.5).tools()}["shell"]
    out, ok = await slow.call(json.dumps({"command": "tail -f notes.txt"}), 30)
    assert ok and out == "timed out after 0.5 s\nalpha\nbeta\nalpha\n"
    import anyio

    pids = []
    open_process = anyio.open_process

    async def recording(*a, **kw):
        p = await open_process(*a, **kw)
        pids.append(p.pid)
        return p

    monkeypatch.setattr(anyio, "open_process", recording)
    t0 = time.perf_counter()
    out, ok = await tools["shell"].call(json.dumps({"command": "tail -f notes.txt"}), 0.3)
    assert not ok and out == "Error: shell timed out after 0.3 s"
    assert time.perf_counter() - t0 < 3
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)  # the group is gone
