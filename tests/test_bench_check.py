"""agentfast bench's greedy check, plain and through verification steps with the oracle's
drafts (--check-drafts), on the tiny random Llama (CPU, fp32: the fast path is the oracle's
own computation, so every token and every draft agrees)."""

from __future__ import annotations

import torch

from agentfast.engine import Engine
from agentfast.engine.backends import create_backend
from agentfast.engine.bench.report import table
from agentfast.engine.bench.run import OracleDrafter, greedy_check


def _pair(llama_dir):
    m = Engine.load(str(llama_dir), device="cpu").model
    w = {k: v.float() for k, v in m.weights.items()}
    cpu = torch.device("cpu")
    return (create_backend("reference", m.config, w, cpu, torch.float32, 256),
            create_backend("reference", m.config, w, cpu, torch.float32, 256), m.config)


def test_oracle_drafter_proposes_the_oracles_greedy_tokens(llama_dir):
    oracle, fast, cfg = _pair(llama_dir)
    prompt = torch.randint(0, cfg.vocab_size, (20,), generator=torch.Generator().manual_seed(0))
    prompt = prompt.tolist()
    cache = fast.new_cache()
    want = greedy_check(oracle, fast, prompt, 12)
    assert want["equal"] and want["steps"] == 12
    logits = fast.prefill(cache, prompt, 0)
    from agentfast.engine.sampling import SamplingParams

    greedy = list(fast.decode(cache, logits, len(prompt), SamplingParams(max_tokens=12),
                              frozenset(), 12))
    d = OracleDrafter(oracle, 4)
    assert d.propose(prompt, 4) == greedy[:4]
    assert d.propose(prompt + greedy[:5], 4) == greedy[5:9]  # only the new tokens re-run
    assert d.propose(prompt + greedy[:2], 3) == greedy[2:5]  # a shorter history: from there


def test_greedy_check_through_verification_steps(llama_dir):
    oracle, fast, cfg = _pair(llama_dir)
    prompt = torch.randint(0, cfg.vocab_size, (20,), generator=torch.Generator().manual_seed(1))
    rec = greedy_check(oracle, fast, prompt.tolist(), 24, drafts=3)
    assert rec["equal"] and rec["flips"] == 0 and rec["T"] == 4
    assert rec["verify_steps"] >= 5 and rec["accepted"] == rec["drafted"] > 0  # all kept
    base = {"model": "tiny", "backend": "reference", "context": 20, "weight_bytes": 1,
            "roofline_tokens_per_s": None}
    md = table([{**base, "T": 1, "tokens_per_s": 100.0, "ms_per_token": 10.0},
                {**base, "T": 4, "check": rec}])
    assert "reference / T = 4 (oracle drafts" in md and "every token equals" in md


def test_check_drafts_out_of_range_is_refused(capsys):
    import pytest

    from agentfast.engine.bench.run import main

    for bad in ("-1", "16"):
        with pytest.raises(SystemExit):
            main(["--check-drafts", bad, "--device", "cpu"])
        assert "--check-drafts" in capsys.readouterr().err
