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
    """A random automaton: allowed sets (some empty), bitmask, a full next-state table [S, V]
    (-1 where not allowed; most tokens of a state share one target, as in real automata) and
    its compact form (default, exc_ptr, exc_tokens, exc_next) as the automaton builds it."""
    from agentfast.engine.constraints.automaton import compact_rows

    allowed = torch.rand(S, V) < density  # [S, V] bool
    W = (V + 31) // 32
    bits = torch.zeros(S, W * 32, dtype=torch.int64)
    bits[:, :V] = allowed.long()
    words = (bits.view(S, W, 32) << torch.arange(32)).sum(-1)  # [S, W] as uint32 values
    bitmask = words.to(torch.int64).where(words < 2**31, words - 2**32).to(torch.int32)
    common = torch.randint(0, S, (S, 1)).expand(S, V)
    full = torch.where(torch.rand(S, V) < 0.7, common, torch.randint(0, S, (S, V)))
    full = full.where(allowed, -1)
    rows_t = [allowed[s].nonzero().flatten().numpy() for s in range(S)]
    rows_n = [full[s, allowed[s]].numpy() for s in range(S)]
    default, exc_ptr, exc_tokens, exc_next = compact_rows(rows_t, rows_n)
    tables = [torch.from_numpy(t).to(**I32) for t in (default, exc_ptr, exc_tokens, exc_next)]
    return allowed, bitmask.to(DEVICE), full, tables, int((exc_ptr[1:] - exc_ptr[:-1]).max())


@pytest.mark.parametrize("S,V,density", [(1, 1, 1.0), (3, 33, 0.5), (5, 99, 0.1),
                                         (4, 1000, 0.02), (2, 4099, 0.3)])
def test_mask_logits(S, V, density):
    allowed, bitmask, _, _, _ = random_tables(S, V, density)
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
    _, bitmask, _, _, _ = random_tables(2, 40, 1.0)  # W = 2: ids 0..63 in the table
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
    allowed, bitmask, full, tables, max_exc = random_tables(S, V, density)
    W = bitmask.shape[1]
    for s in range(-1, S):
        toks = set(torch.randint(0, V, (6,)).tolist()) | {0, V - 1, W * 32, -3}
        if s >= 0:  # every exception of the state, and a token that takes the default
            toks |= set(allowed[s].nonzero().flatten()[:3].tolist())
            lo, hi = int(tables[1][s]), int(tables[1][s + 1])
            toks |= set(tables[2][lo:hi].tolist())
        for t in sorted(toks):
            token = torch.tensor([t], dtype=tok_dtype, device=DEVICE)
            out = cm.advance_state(torch.tensor([s], **I32), token, bitmask, *tables, max_exc)
            ref = cm.advance_state_ref(torch.tensor([s], **I32), token, bitmask, *tables)
            want = int(full[s, t]) if s >= 0 and 0 <= t < V else -1
            assert int(ref[0]) == want, (s, t)
            assert int(out[0]) == want, (s, t)


def test_advance_state_exception_rows_around_powers_of_two():
    """States with 0..17 exceptions (the search's step count changes at powers of two): the
    kernel finds every exception, the default between and around them, -1 for the rest."""
    from agentfast.engine.constraints.automaton import compact_rows

    V, counts = 36, [0, 1, 2, 3, 4, 7, 8, 15, 16, 17]
    rows_t = [torch.arange(0, V, 2).numpy() for _ in counts]  # even tokens allowed
    rows_n = []
    for s, k in enumerate(counts):
        n = torch.full((V // 2,), 100 + s)
        n[torch.randperm(V // 2)[:k]] = torch.arange(k) + 200  # k exceptions
        rows_n.append(n.numpy())
    default, exc_ptr, exc_tokens, exc_next = compact_rows(rows_t, rows_n)
    assert (default == [100 + s for s in range(len(counts))]).all()
    assert (exc_ptr[1:] - exc_ptr[:-1] == counts).all()
    bitmask = torch.full((len(counts), 2), 0x55555555, dtype=torch.int32, device=DEVICE)
    tables = [torch.from_numpy(t).to(**I32) for t in (default, exc_ptr, exc_tokens, exc_next)]
    for s in range(len(counts)):
        for t in [*range(0, V, 2), 1, V - 1]:
            out = cm.advance_state(torch.tensor([s], **I32), torch.tensor([t], **I32), bitmask,
                                   *tables, max(counts))
            want = int(rows_n[s][t // 2]) if t % 2 == 0 else -1
            assert int(out[0]) == want, (s, t)


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
            cm.advance_state(state, token, dev.bitmask, dev.default, dev.exc_ptr,
                             dev.exc_tokens, dev.exc_next, dev.max_exc)
            s = host.next(s, tok_id)
            assert int(state[0]) == s
