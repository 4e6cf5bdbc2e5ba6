"""The `agentfast` command on a tiny checkpoint: chat (one-shot and interactive), generate, info."""

from __future__ import annotations

import io

from agentfast.cli import main
from agentfast.engine import Engine, SamplingParams


def test_generate_prints_the_engines_text(capsys, llama_dir):
    assert main(["generate", "-m", str(llama_dir), "-n", "8", "--stats", "def add("]) == 0
    out = capsys.readouterr()
    want = Engine.load(str(llama_dir), device="cpu").generate("def add(", SamplingParams(8)).text
    assert out.out == want + "\n"
    assert "prompt tokens" in out.err and "loaded" in out.err


def test_generate_with_a_drafter_is_lossless_and_reports_drafts(capsys, llama_dir):
    """--drafter ngram: the same greedy text as without it, and the draft counts in --stats."""
    prompt = "1 2 3 4 1 2 3 4 1 2 3 4 1 2"
    assert main(["generate", "-m", str(llama_dir), "-n", "16", "--stats", "--drafter", "ngram",
                 prompt]) == 0
    out = capsys.readouterr()
    want = Engine.load(str(llama_dir), device="cpu").generate(prompt, SamplingParams(16)).text
    assert out.out == want + "\n"
    stats = next(line for line in out.err.splitlines() if "prompt tokens" in line)
    assert "drafted tokens accepted" in stats, stats


def test_chat_one_shot_and_interactive_reuse(capsys, monkeypatch, llama_dir):
    assert main(["chat", "-m", str(llama_dir), "-n", "6", "hello", "there"]) == 0
    one_shot = capsys.readouterr().out
    eng = Engine.load(str(llama_dir), device="cpu")
    want = eng.chat([{"role": "user", "content": "hello there"}], SamplingParams(6)).text
    assert one_shot == want + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\nand more\n/exit\n"))
    assert main(["chat", "-m", str(llama_dir), "-n", "6", "--stats"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("> " + want + "\n")
    stats = [line for line in out.err.splitlines() if "prompt tokens" in line]
    assert len(stats) == 2 and "0 reused" in stats[0] and "0 reused" not in stats[1]


def test_info(capsys, checkpoints):
    assert main(["info", "-m", str(checkpoints["qwen3"])]) == 0
    out = capsys.readouterr().out
    assert "qwen3 (2 layers, hidden 64" in out and "parameters" in out and "roofline" in out
