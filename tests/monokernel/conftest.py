"""Fixtures shared by the monokernel tests."""

from __future__ import annotations

import pytest

from agentfast.kernels.monokernel import kernel as K
from agentfast.kernels.monokernel import weights as W


@pytest.fixture
def launches(monkeypatch):
    """(T, steps asked, steps run) of every kernel launch."""
    seen: list[tuple[int, int, int]] = []
    orig = K.Monokernel.launch

    def spy(self, b, nsteps, **kw):
        s0 = int(b.state[W.STEPS])
        orig(self, b, nsteps, **kw)
        seen.append((self.plan.T, nsteps, int(b.state[W.STEPS]) - s0))

    monkeypatch.setattr(K.Monokernel, "launch", spy)
    return seen
