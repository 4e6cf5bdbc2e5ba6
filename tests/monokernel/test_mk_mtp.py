"""The MTP drafter on the monokernel backend (CPU interpreter, one program): SAMPLE copies the
final hidden state (the residual stream before the final norm) of every position whose K/V a
step keeps into the KV cache's `hidden` rows when state[KEEP_HIDDEN] is set, T = 1 and T > 1
with accepted and rejected drafts, equal to the VM's and to the reference transformer's; off,
nothing is written. Through the backend: greedy output with MtpDrafter equals plain greedy and
the reference backend with the same module, token for token; the cache's hidden states equal the
reference backend's; the drafts the drafter made from the kernel's hidden states (also right
after plain stretches on the T = 1 kernel, and in a session's second turn) equal the drafts it
makes from the reference transformer's."""

from __future__ import annotations

import pytest
import torch
from mk_utils import PROMPT, V, harness, interpreted, run_both, spy_launches

from agentfast.engine import Engine, SamplingParams
from agentfast.engine.errors import RequestError
from agentfast.kernels.monokernel import weights as W
from agentfast.kernels.monokernel.diff import compare
from agentfast.spec_decode import DraftPolicy, StepCost
from agentfast.spec_decode import mtp as M

N = 7
GREEDY = SamplingParams(temperature=0.0)
TOL = dict(rtol=1e-4, atol=1e-4)


def _reference_hidden(h, tokens: list[int]) -> torch.Tensor:
    """The reference transformer's final hidden states of `tokens` at positions 0.. (one
    forward over a fresh cache that keeps them)."""
    cache = h.model.new_cache(initial=h.max_len, keep_hidden=True)
    h.model.forward(torch.tensor(tokens), 0, cache)
    return cache.hidden[:len(tokens)].clone()


@interpreted
@pytest.mark.parametrize("name,T,drafts", [
    ("llama_gqa_tied_hd64", 1, None),
    ("qwen3_qknorm_hd128", 4, "perfect"),
    ("llama_obias_hd64", 4, "every_third_wrong"),
])
def test_kernel_keeps_hidden_states(name, T, drafts):
    """Every position with K/V (the prompt's from the prefill, then each step's kept ones) holds
    the reference transformer's final hidden state; the kernel's rows equal the VM's; no row past
    the last kept position is written (the last output has no K/V yet, rejected drafts none)."""
    h = harness(name, T=T, keep_hidden=True)
    ref, _ = h.reference_greedy(PROMPT, N)
    d = {None: None, "perfect": ref,
         "every_third_wrong": [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(ref)]}
    h.start(PROMPT, N, drafts=d[drafts])
    assert int(h.bufs.state[W.KEEP_HIDDEN]) == 1
    assert h.bufs.hidden.data_ptr() == h.cache.hidden.data_ptr()  # the cache's own rows
    assert h.cache.hidden[:len(PROMPT)].abs().sum() > 0  # the prefill wrote the prompt's
    b = run_both(h, N)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == h.tokens() == ref
    steps = int(b.state[W.STEPS])
    if drafts == "perfect":
        assert steps < N - 1  # steps that kept several positions
    n = len(PROMPT) + N - 1
    want = _reference_hidden(h, PROMPT + ref[:-1])
    torch.testing.assert_close(b.hidden[:n], want, **TOL)
    torch.testing.assert_close(h.bufs.hidden[:n], want, **TOL)
    assert not b.hidden[n:].any() and not h.bufs.hidden[n:].any()


@interpreted
def test_hidden_states_off_write_nothing():
    """Without state[KEEP_HIDDEN] the kernel leaves the hidden rows alone (a cache that keeps
    them: only the prefill's; buffers without: the placeholder) and decodes as before."""
    h = harness("llama_gqa_tied_hd64", keep_hidden=True)
    ref, _ = h.reference_greedy(PROMPT, 4)
    h.start(PROMPT, 4)
    h.bufs.state[W.KEEP_HIDDEN] = 0
    prompt_rows = h.cache.hidden[:len(PROMPT)].clone()
    b = run_both(h, 4)
    assert compare(h.bufs, b) is None, compare(h.bufs, b)
    assert h.tokens(b) == ref
    for hid in (b.hidden, h.bufs.hidden):
        assert torch.equal(hid[:len(PROMPT)], prompt_rows) and not hid[len(PROMPT):].any()
    plain = harness("llama_gqa_tied_hd64")
    assert plain.cache.hidden is None and plain.bufs.hidden.shape == (1, plain.cfg.hidden_size)
    plain.start(PROMPT, 4)
    assert int(plain.bufs.state[W.KEEP_HIDDEN]) == 0
    pb = run_both(plain, 4)
    assert compare(plain.bufs, pb) is None and plain.tokens(pb) == ref
    assert not pb.hidden.any()


# ---- through the backend ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref(llama_dir):
    return Engine.load(str(llama_dir), backend="reference", device="cpu", dtype=torch.float32,
                       max_context=96)


@pytest.fixture(scope="module")
def module_sd(ref):
    return M.init_module(ref.config, ref.model.weights, seed=3)


def _mtp(eng: Engine, sd, policy: DraftPolicy) -> M.MtpDrafter:
    w = eng.backend.model.w
    d = M.MtpDrafter.from_weights(eng.config, sd, w.embed, w.lm_head, eng.max_context)
    d.policy = policy
    return d


def _engine(ref: Engine, backend: str, drafter) -> Engine:
    return Engine(ref.model, backend=backend, device="cpu", dtype=torch.float32,
                  max_context=96, drafter=drafter)


def _spy(d) -> list[tuple[list[int], int, list[int]]]:
    """Every proposal the drafter makes: (history, k, drafts)."""
    log: list[tuple[list[int], int, list[int]]] = []
    orig = d.propose

    def propose(history, k):
        out = orig(history, k)
        log.append((list(history), k, list(out)))
        return out

    d.propose = propose
    return log


def _decode(eng: Engine, ids: list[int], max_new: int, drafter=None):
    """(greedy tokens, the cache) through the backend."""
    be = eng.backend
    cache = be.new_cache()
    logits = be.prefill(cache, ids, 0)
    kw = {} if drafter is None else {"drafter": drafter, "history": ids}
    return list(be.decode(cache, logits, len(ids), GREEDY, frozenset(), max_new, **kw)), cache


def _check_drafts(ref: Engine, sd, tokens: list[int], log) -> None:
    """The drafts logged equal a fresh drafter's on the same histories, reading the reference
    transformer's hidden states (of the whole sequence: position j's depends on tokens <= j)."""
    m = ref.backend.model
    cache = m.new_cache(initial=ref.max_context, keep_hidden=True)
    m.forward(torch.tensor(tokens), 0, cache)
    d = _mtp(ref, sd, DraftPolicy(k_max=3, k=3, adaptive=False))
    d.bind(cache)
    for hist, k, drafts in log:
        assert tokens[:len(hist)] == hist
        assert d.propose(hist, k) == drafts, len(hist)


@pytest.fixture
def launches(monkeypatch):
    return spy_launches(monkeypatch)


@interpreted
def test_mtp_greedy_equals_reference(ref, module_sd, launches):
    """Drafting every step (k = 3): the reference's plain greedy tokens and those of the
    reference backend with the same module, one T = 4 verification step per launch; the
    monokernel cache's hidden states equal the reference backend's, position for position;
    every draft equals the one the reference's hidden states give."""
    fixed = DraftPolicy(k_max=3, k=3, adaptive=False)
    d = _mtp(ref, module_sd, fixed)
    dr = _mtp(ref, module_sd, DraftPolicy(k_max=3, k=3, adaptive=False))
    mk, refm = _engine(ref, "monokernel", d), _engine(ref, "reference", dr)
    assert mk.backend.keep_hidden and mk.backend.new_cache().hidden is not None
    log, log_r = _spy(d), _spy(dr)
    ids = mk.tokenizer.encode("a b c d a b c d a b c")
    got, cache = _decode(mk, ids, 12, d)
    want, _ = _decode(ref, ids, 12)
    got_r, cache_r = _decode(refm, ids, 12, dr)
    assert got == want == got_r
    assert log == log_r and len(log) >= 3  # same histories, same drafts
    assert launches and all(T == 4 and n == 1 == r for T, n, r in launches), launches
    assert len(launches) < len(got) - 1  # some drafts were accepted
    n = len(ids) + len(got) - 1  # positions with K/V
    torch.testing.assert_close(cache.hidden[:n], cache_r.hidden[:n], **TOL)
    assert cache.hidden[len(ids):n].abs().sum() > 0  # the kernel's rows, not the prefill's
    _check_drafts(ref, module_sd, ids + got, log)


@interpreted
def test_mtp_after_plain_stretches_and_in_sessions(ref, module_sd, launches):
    """A policy that switches drafting off: plain stretches run on the T = 1 kernel (which
    keeps hidden states too), the probes after them draft from the last position's state
    (equal to the reference's); a session's second turn drafts from the first turn's kernel-
    written states. Outputs equal plain greedy."""
    policy = DraftPolicy(k_max=3, k=3, probe_every=2, cost=StepCost({1: 1.0, 4: 2.0}))
    d = _mtp(ref, module_sd, policy)
    mk = _engine(ref, "monokernel", d)
    log = _spy(d)
    ids = mk.tokenizer.encode("Agents call tools, read files, and write them back.")
    got, cache = _decode(mk, ids, 20, d)
    assert got == _decode(ref, ids, 20)[0]
    assert policy.switched_off >= 1
    plain = [i for i, (T, _, r) in enumerate(launches) if T == 1 and r >= 2]
    spec = [i for i, (T, _, _) in enumerate(launches) if T == 4]
    assert plain and spec and spec[-1] > plain[0], launches  # a probe after a plain stretch
    n = len(ids) + len(got) - 1
    want = ref.backend.model.new_cache(initial=96, keep_hidden=True)
    ref.backend.model.forward(torch.tensor(ids + got[:-1]), 0, want)
    torch.testing.assert_close(cache.hidden[:n], want.hidden[:n], **TOL)
    _check_drafts(ref, module_sd, ids + got, log)
    # sessions: the second turn reuses the first's K/V and hidden states
    p = SamplingParams(max_tokens=8, ignore_eos=True)
    d.policy = DraftPolicy(k_max=3, k=3, adaptive=False)
    log.clear()
    first = mk.generate(ids, p, session="s")
    n1 = len(log)
    turn2 = ids + first.token_ids + ids[:4]
    r2 = mk.generate(turn2, p, session="s")
    assert first.token_ids == ref.generate(ids, p).token_ids
    assert r2.reused_tokens > 0 and r2.token_ids == ref.generate(turn2, p).token_ids
    assert n1 > 0 and len(log) > n1
    _check_drafts(ref, module_sd, ids + first.token_ids, log[:n1])
    _check_drafts(ref, module_sd, turn2 + r2.token_ids, log[n1:])


@interpreted
def test_mtp_sampling_equals_plain_sampling(ref, module_sd):
    """Sampling keys its noise by position and a draft is kept only when it is the token
    sampled there: with MTP drafts the monokernel samples plain decode's tokens."""
    d = _mtp(ref, module_sd, DraftPolicy(k_max=3, k=3, adaptive=False))
    mk = _engine(ref, "monokernel", d)
    plain = _engine(ref, "monokernel", None)
    ids = mk.tokenizer.encode("a b c d a b c d a b c")
    p = SamplingParams(max_tokens=10, temperature=1.0, seed=4, ignore_eos=True)
    got = mk.generate(ids, p)
    assert got.token_ids == plain.generate(ids, p).token_ids and got.draft_steps > 0


# ---- the module inside the kernel (the n-gram lookup's fallback) -----------------------------

@interpreted
@pytest.mark.parametrize("lazy", [False, True])
def test_ngram_mtp_runs_in_the_kernel(ref, module_sd, launches, lazy):
    """The lookup with the MTP fallback (NgramMtpDrafter) on the monokernel with the module
    attached: one launch of the switching kernel (T = 8, 2-position narrow steps) runs the
    module after every step (mtp_lazy False; True: after those whose next step may use its
    draft, over the positions since it last ran); greedy output equals plain greedy, also in a
    session's second turn; the module's drafts were verified in the kernel (mtp_steps); the
    cache's module K/V (the fill kernel wrote the prompt's, the decode kernel the rest)
    equals the host drafter's (lazy: the prompt's, and the backend records the tokens its K/V
    covers, up to weights.M_KV)."""
    d = M.NgramMtpDrafter(_mtp(ref, module_sd, None), floor=0.0)
    d.policy = DraftPolicy(k_max=7, k=4, cost=StepCost({1: 1.0, 2: 1.2, 8: 2.0}))
    mk = _engine(ref, "monokernel", d)
    be = mk.backend
    be.switch_t, be.switch_narrow, be.mtp_lazy = 8, 2, lazy
    assert not be.drafts_on_device(d)  # (its module not attached: the host would draft)
    be.attach_mtp(d.mtp.modules[0])
    assert be.drafts_on_device(d) and be.w.w_qkv.shape[0] == mk.config.num_layers + 1
    ids = mk.tokenizer.encode("Agents call tools, read files, and write them back.")
    got, cache = _decode(mk, ids, 14, d)
    assert got == _decode(ref, ids, 14)[0]
    # the module fill's kernel over the prompt (16 positions a step), then the decode's
    assert [T for T, _, _ in launches] == [16, 8], launches
    assert launches[0][2] == -(-(len(ids) - 1) // 16)
    assert d.mtp_steps > 0 and d.steps >= d.mtp_steps
    L, n = mk.config.num_layers, len(ids) + len(got) - 1  # the module's positions
    covered = be._mtp_tokens[cache]
    assert covered == (ids + got)[:len(covered)] and len(covered) >= len(ids)
    if lazy:
        n = len(ids) - 1
    else:  # all but the last step's positions (the sequence ended there: no module ops)
        assert n - 8 <= len(covered) - 1 < n
        n = len(covered) - 1
    host = _mtp(ref, module_sd, None)
    want = ref.backend.model.new_cache(initial=96, keep_hidden=True)
    ref.backend.model.forward(torch.tensor(ids + got[:-1]), 0, want)
    host.bind(want)
    host.propose(ids + got, 1)
    torch.testing.assert_close(cache.k[L, :, :n], host._state(want).kv.k[0, :, :n], **TOL)
    torch.testing.assert_close(cache.v[L, :, :n], host._state(want).kv.v[0, :, :n], **TOL)
    p = SamplingParams(max_tokens=8, ignore_eos=True)
    first = mk.generate(ids, p, session="s")
    turn2 = ids + first.token_ids + ids[:4]
    r2 = mk.generate(turn2, p, session="s")
    assert first.token_ids == ref.generate(ids, p).token_ids
    assert r2.reused_tokens > 0 and r2.token_ids == ref.generate(turn2, p).token_ids


def test_ngram_mtp_on_the_host(ref, module_sd):
    """On a host backend the module drafts one token where the lookup has none, when its
    probability reaches the floor (1: never); its steps are counted apart too."""
    d = M.NgramMtpDrafter(_mtp(ref, module_sd, None), floor=0.0)
    d.policy = DraftPolicy(k_max=3, k=3, adaptive=False)
    eng = _engine(ref, "reference", d)
    ids = eng.tokenizer.encode("Agents call tools, read files, and write them back.")
    p = SamplingParams(max_tokens=10, ignore_eos=True)
    assert eng.generate(ids, p).token_ids == ref.generate(ids, p).token_ids
    assert d.mtp_steps > 0 and 0 <= d.mtp_accepted <= d.mtp_steps <= d.steps
    never = M.NgramMtpDrafter(_mtp(ref, module_sd, None), floor=1.0)
    never.policy = DraftPolicy(k_max=3, k=3, adaptive=False)
    eng = _engine(ref, "reference", never)
    assert eng.generate(ids, p).token_ids == ref.generate(ids, p).token_ids
    assert never.mtp_steps == 0 and 0 < never.mtp.last_prob < 1.0  # asked, below the floor
    with pytest.raises(RequestError):
        M.NgramMtpDrafter(never.mtp, floor=1.5)


@interpreted
def test_ngram_mtp_by_name_in_a_chat_session(ref, module_sd, tmp_path):
    """drafter="ngram+mtp:PATH" on the monokernel attaches the module (caches with its layer);
    three chat turns of a session equal plain greedy (the module's K/V of each turn's new
    prompt tokens written by the fill kernel, the rest by the decode kernel)."""
    path = M.save_module(tmp_path / "x.mtp.safetensors", module_sd, {})
    mk = Engine(ref.model, backend="monokernel", device="cpu", dtype=torch.float32,
                max_context=160, drafter=f"ngram+mtp:{path}")
    d = mk.drafter
    assert isinstance(d, M.NgramMtpDrafter) and mk.backend.mtp_module is d.mtp.modules[0]
    assert mk.backend.new_cache().k.shape[0] == mk.config.num_layers + 1
    d.floor = 0.0  # (a random module is rarely sure of anything: the default floor skips it)
    plain = Engine(ref.model, backend="reference", device="cpu", dtype=torch.float32,
                   max_context=160)  # (the chat template's prompt: more than 96 tokens)
    p = SamplingParams(max_tokens=8, temperature=0.0)
    msgs = [{"role": "user", "content": "Agents call tools"}]
    for _ in range(3):
        r = mk.chat(msgs, p, session="s")
        assert r.token_ids == plain.chat(msgs, p).token_ids and len(r.token_ids) == 8
        msgs += [{"role": "assistant", "content": r.text}, {"role": "user", "content": "and?"}]
    assert r.reused_tokens > 0 and d.mtp_steps > 0


@interpreted
def test_ngram_mtp_near_the_cache_end(ref, module_sd):
    """A prompt within 16 positions of the cache's end (the fill kernel's last rows would pass
    it): the module's K/V of the prompt are filled on the host instead; greedy output equals
    plain greedy up to the cache's capacity."""
    d = M.NgramMtpDrafter(_mtp(ref, module_sd, None), floor=0.0)
    d.policy = DraftPolicy(k_max=3, k=3, cost=StepCost({1: 1.0, 2: 1.2, 4: 1.5}))
    mk = _engine(ref, "monokernel", d)
    mk.backend.switch_t, mk.backend.switch_narrow = 4, 2
    mk.backend.attach_mtp(d.mtp.modules[0])
    ids = (mk.tokenizer.encode("Agents call tools, read files, and write them back. ") * 8)[:86]
    got, cache = _decode(mk, ids, 6, d)
    assert len(ids) + 16 > cache.capacity and cache not in mk.backend._fill_bufs
    assert got == _decode(ref, ids, 6)[0]


@interpreted
def test_ngram_mtp_in_the_kernel_samples_as_plain(ref, module_sd):
    """Sampling: a draft (the lookup's or the module's) is kept only where it is the token
    sampled there, with noise keyed by position: the tokens plain sampling gives."""
    d = M.NgramMtpDrafter(_mtp(ref, module_sd, None), floor=0.0)
    d.policy = DraftPolicy(k_max=3, k=3, cost=StepCost({1: 1.0, 2: 1.2, 4: 1.5}))
    mk = _engine(ref, "monokernel", d)
    mk.backend.switch_t, mk.backend.switch_narrow = 4, 2
    mk.backend.attach_mtp(d.mtp.modules[0])
    plain = _engine(ref, "monokernel", None)
    ids = mk.tokenizer.encode("a b c d a b c d a b c")
    p = SamplingParams(max_tokens=10, temperature=1.0, seed=4, ignore_eos=True)
    assert mk.generate(ids, p).token_ids == plain.generate(ids, p).token_ids
    assert d.mtp_steps > 0
