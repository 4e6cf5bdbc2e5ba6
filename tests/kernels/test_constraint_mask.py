from __future__ import annotations

import pytest
import torch
from kernel_utils import (
    DEVICE,
    interpreted,
    seeded,  # noqa: F401 (autouse fixture)
)

from agentfast.kernels import constraint_mask as cm

pytestmark = interpreted
I32 = dict(dtype=torch.int32, device=DEVICE)


def random_tables(S: int, V: int, density: float):
    """A random automaton: allowed sets (some empty), bitmask, CSR with random next states."""
    allowed = torch.rand(S, V) < density  # [S, V] bool
    W = (V + 31) // 32
    bits = torch.zeros(S, W * 32, dtype=torch.int64)
    bits[:, :V] = allowed.long()
    words = (bits.view(S, W, 32) << torch.arange(32)).sum(-1)  # [S, W] as uint32 values
    bitmask = words.to(torch.int64).where(words < 2**31, words - 2**32).to(torch.int32)
    rows = [allowed[s].nonzero().flatten() for s in range(S)]
    lens = torch.tensor([len(r) for r in rows])
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    tokens = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    nxt = torch.randint(0, S, (tokens.numel(),))
    tables = [t.to(**I32) for t in (row_ptr, tokens, nxt)]
    return allowed, bitmask.to(DEVICE), tables, int(lens.max())


@pytest.mark.parametrize("S,V,density", [(1, 1, 1.0), (3, 33, 0.5), (5, 99, 0.1),
                                         (4, 1000, 0.02), (2, 4099, 0.3)])
def test_mask_logits(S, V, density):
    allowed, bitmask, _, _ = random_tables(S, V, density)
    for s in range(S):
        logits = torch.randn(V, device=DEVICE)
        state = torch.tensor([s], **I32)
        want = logits.masked_fill(~allowed[s].to(DEVICE), float("-inf"))
        ref = cm.mask_logits_ref(logits.clone(), bitmask, state)
        out = logits.clone()
        assert cm.mask_logits(out, bitmask, state, block=256) is out
        torch.testing.assert_close(ref, want)
        torch.testing.assert_close(out, want)


def test_mask_logits_dead_state_and_wider_logits():
    _, bitmask, _, _ = random_tables(2, 40, 1.0)  # W = 2: ids 0..63 in the table
    logits = torch.randn(100, device=DEVICE)
    out = cm.mask_logits(logits.clone(), bitmask, torch.tensor([0], **I32))
    assert torch.isfinite(out[:40]).all() and torch.isinf(out[64:]).all()
    torch.testing.assert_close(out, cm.mask_logits_ref(logits.clone(), bitmask,
                                                       torch.tensor([0], **I32)))
    dead = cm.mask_logits(logits.clone(), bitmask, torch.tensor([-1], **I32))
    assert torch.isinf(dead).all()


@pytest.mark.parametrize("S,V,density", [(1, 5, 1.0), (3, 33, 0.5), (6, 99, 0.1),
                                         (4, 1000, 0.05), (2, 70, 0.0)])
@pytest.mark.parametrize("tok_dtype", [torch.int32, torch.int64])
def test_advance_state(S, V, density, tok_dtype):
    allowed, _, (row_ptr, tokens, nxt), max_row = random_tables(S, V, density)
    for s in range(-1, S):
        for t in sorted(set(torch.randint(0, V, (6,)).tolist()) | {0, V - 1}):
            token = torch.tensor([t], dtype=tok_dtype, device=DEVICE)
            out = cm.advance_state(torch.tensor([s], **I32), token, row_ptr, tokens, nxt,
                                   max_row)
            ref = cm.advance_state_ref(torch.tensor([s], **I32), token, row_ptr, tokens, nxt)
            if s < 0 or not allowed[s, t]:
                assert int(ref[0]) == -1
            else:
                lo = int(row_ptr[s])
                i = int((tokens[lo:int(row_ptr[s + 1])] == t).nonzero()[0])
                assert int(ref[0]) == int(nxt[lo + i])
            assert int(out[0]) == int(ref[0]), (s, t)


def test_search_steps_cover_rows():
    for n in range(0, 70):  # a lower-bound search over n entries needs ceil(log2(n + 1)) steps
        assert 2 ** cm.search_steps(n) >= n + 1


def test_walk_a_compiled_schema(tmp_path):
    """Mask + advance on the device follow the host automaton along random allowed paths."""
    from tiny_models import write_tokenizer

    from agentfast.engine import constraints as C
    from agentfast.engine.tokenizer import load_hf_tokenizer

    write_tokenizer(tmp_path)
    tok = load_hf_tokenizer(tmp_path)
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 3},
        "n": {"type": "integer", "minimum": -5, "maximum": 12},
        "tags": {"type": "array", "items": {"enum": ["a", "bc"]}, "maxItems": 2}},
        "required": ["name", "n", "tags"], "additionalProperties": False}
    host = C.compile(C.json_schema(schema), tok)
    dev = host.to(DEVICE)
    V = tok.vocab_size + 3
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        s, state = host.state0, torch.tensor([host.state0], **I32)
        while not host.is_done(s):
            logits = cm.mask_logits(torch.zeros(V, device=DEVICE), dev.bitmask, state)
            allowed = torch.isfinite(logits).nonzero().flatten().cpu().int()
            assert torch.equal(allowed, host.allowed(s)), s
            tok_id = int(allowed[torch.randint(len(allowed), (1,), generator=gen)])
            token = torch.tensor([tok_id], dtype=torch.int64, device=DEVICE)
            cm.advance_state(state, token, dev.row_ptr, dev.tokens, dev.next_state, dev.max_row)
            s = host.next(s, tok_id)
            assert int(state[0]) == s
