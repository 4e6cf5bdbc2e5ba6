"""/metrics reports speculative decoding as it happens: with a drafter on the engine, the mean
accepted draft length and the drafted / accepted token counters come from the drafter."""

from __future__ import annotations

import re

import httpx
import pytest

import agentfast
from agentfast.engine import Engine
from agentfast.server import create_app
from agentfast.server.inprocess import ASGIStreamTransport

pytestmark = pytest.mark.anyio


def value(text: str, name: str) -> float:
    return float(re.search(rf"^agentfast_{name} ([0-9.e+-]+)$", text, re.M).group(1))


async def test_accepted_draft_length_comes_from_the_drafter(llama_dir):
    from agentfast.spec_decode import NgramDrafter

    drafter = NgramDrafter()
    app = create_app(Engine.load(str(llama_dir), device="cpu", drafter=drafter),
                     model_name="tiny")
    root = httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url="http://x")
    before = (await root.get("/metrics")).text
    assert value(before, "spec_decode_accepted_length") == 0
    client = agentfast.AsyncOpenAI(app=app)
    await client.completions.create(model="tiny", prompt="a b c a b c a b c a b c a b",
                                    max_tokens=32, temperature=0)
    text = (await root.get("/metrics")).text
    assert drafter.steps > 0
    assert value(text, "spec_decode_accepted_length") == pytest.approx(drafter.mean_accepted,
                                                                       abs=1e-6)
    assert value(text, "spec_decode_draft_tokens_total") == drafter.drafted > 0
    assert value(text, "spec_decode_accepted_tokens_total") == drafter.accepted
