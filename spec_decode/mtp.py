"""MTP (multi-token prediction) modules, DeepSeek-V3 style, and the drafter that runs them.

One module sits on top of the main model. At position t it takes the main model's final hidden
state h_t (before the final norm) and the embedding of token t+1, and predicts token t+2:

    x   = eh_proj(cat(enorm(emb(x_{t+1})), hnorm(h_t)))       eh_proj: [H, 2H]
    o_t = decoder_layer(x)   (the main model's layer architecture, its own KV cache)
    p   = softmax(lm_head(norm(o_t)))                          lm_head, emb: the main model's

For k > 1 drafts the module is reused recursively (the common practice with one module): its
output o_t stands in for h, the drafted token for x_{t+1}, at the next position of the same
module KV cache. Checkpoints with several modules (DeepSeek's D sequential ones) load; drafting
uses module 0 recursively.

Files: safetensors with `mtp.{i}.eh_proj.weight`, `mtp.{i}.enorm.weight`, `mtp.{i}.hnorm.weight`,
`mtp.{i}.norm.weight` and `mtp.{i}.layer.<name>` where <name> is a decoder layer's HF name
(`self_attn.q_proj.weight`, `mlp.down_proj.weight`, ...). The embedding and the LM head are the
main model's and are not stored (a DeepSeek checkpoint's own copies load as `mtp.{i}.embed.weight`
and `mtp.{i}.head.weight`). Metadata says which model the module was trained for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from agentfast.engine.config import ModelConfig
from agentfast.engine.errors import ModelLoadError, RequestError
from agentfast.engine.model import (
    KVCache,
    LayerWeights,
    build_weights,
    causal_mask,
    expected_shapes,
    rms_norm,
    sdpa,
)
from agentfast.engine.rope import rope_tables, rotate_half

from .drafters import Drafter, NgramDrafter

if TYPE_CHECKING:
    from agentfast.engine.loaders import LoadedModel

FORMAT = "agentfast-mtp"
SUFFIX = ".mtp.safetensors"
MODULES = Path(__file__).parent / "modules"  # modules shipped with the package
_MTP_NAME = re.compile(r"mtp\.(\d+)\.(.+)$")
# DeepSeek-V3 names inside `model.layers.{num_hidden_layers + i}.` -> ours inside `mtp.{i}.`
_DEEPSEEK = {"eh_proj.weight": "eh_proj.weight", "enorm.weight": "enorm.weight",
             "hnorm.weight": "hnorm.weight", "shared_head.norm.weight": "norm.weight",
             "shared_head.head.weight": "head.weight", "embed_tokens.weight": "embed.weight"}


# ---- names and shapes -----------------------------------------------------------------------

def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """A decoder layer's tensors by HF name within the layer (`self_attn.q_proj.weight`, ...)."""
    p = "model.layers.0."
    return {k[len(p):]: v for k, v in expected_shapes(replace(cfg, num_layers=1)).items()
            if k.startswith(p)}


def module_shapes(cfg: ModelConfig, n_modules: int = 1) -> dict[str, tuple[int, ...]]:
    """Every tensor an MTP file holds for `cfg` (embedding and LM head shared, not stored)."""
    h = cfg.hidden_size
    out: dict[str, tuple[int, ...]] = {}
    for i in range(n_modules):
        p = f"mtp.{i}."
        out.update({p + "eh_proj.weight": (h, 2 * h), p + "enorm.weight": (h,),
                    p + "hnorm.weight": (h,), p + "norm.weight": (h,)})
        out.update({p + "layer." + k: v for k, v in layer_shapes(cfg).items()})
    return out


def num_modules(sd: dict[str, torch.Tensor]) -> int:
    idx = {int(m.group(1)) for k in sd if (m := _MTP_NAME.fullmatch(k))}
    return max(idx) + 1 if idx else 0


def check_module(cfg: ModelConfig, sd: dict[str, torch.Tensor], source: str) -> int:
    """Shapes against the main model's config; returns the number of modules."""
    n = num_modules(sd)
    if n == 0:
        raise ModelLoadError(f"{source}: no MTP tensors (mtp.0.*)")
    want = module_shapes(cfg, n)
    h, v = cfg.hidden_size, cfg.vocab_size
    for i in range(n):  # optional own copies of the embedding / head
        want[f"mtp.{i}.embed.weight"] = want[f"mtp.{i}.head.weight"] = (v, h)
    for name, t in sd.items():
        if name not in want:
            raise ModelLoadError(f"{source}: unexpected MTP tensor {name!r}")
        if tuple(t.shape) != want[name]:
            raise ModelLoadError(f"{source}: MTP tensor {name!r} has shape {tuple(t.shape)}, "
                                 f"the model needs {want[name]}")
    missing = sorted(set(module_shapes(cfg, n)) - set(sd))
    if missing:
        raise ModelLoadError(f"{source}: MTP tensor {missing[0]!r} is missing")
    return n


def split_checkpoint_mtp(cfg: ModelConfig, weights: dict[str, torch.Tensor]
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(main weights, MTP weights under our names) from a DeepSeek-V3-style checkpoint, whose MTP
    modules are `model.layers.{num_hidden_layers + i}.*` (eh_proj, enorm, hnorm, shared_head.*,
    embed_tokens and an ordinary decoder layer). Tensors of other layers pass through."""
    pat = re.compile(r"model\.layers\.(\d+)\.(.+)$")
    main, mtp = {}, {}
    for name, t in weights.items():
        m = pat.fullmatch(name)
        if m is None or int(m.group(1)) < cfg.num_layers:
            main[name] = t
            continue
        i, rest = int(m.group(1)) - cfg.num_layers, m.group(2)
        mtp[f"mtp.{i}." + _DEEPSEEK.get(rest, "layer." + rest)] = t
    return main, mtp


def init_module(cfg: ModelConfig, weights: dict[str, torch.Tensor], seed: int = 0
                ) -> dict[str, torch.Tensor]:
    """A fresh module (float32, CPU) for the model with HF-named `weights`: its layer a copy of
    the main model's last layer, its norm the main model's final norm (enorm, hnorm: ones),
    eh_proj passing the hidden state through, plus a little noise. (Starting from half the
    embedding instead predicts token t+1 again with confidence: a loss of 34 nats, not 10.)"""
    g = torch.Generator().manual_seed(seed)
    h = cfg.hidden_size
    last = f"model.layers.{cfg.num_layers - 1}."
    sd = {"mtp.0.layer." + k[len(last):]: v.detach().float().clone()
          for k, v in weights.items() if k.startswith(last)}
    eye = torch.eye(h)
    sd["mtp.0.eh_proj.weight"] = (torch.cat([torch.zeros(h, h), eye], 1)
                                  + torch.randn(h, 2 * h, generator=g) * (0.1 / h ** 0.5))
    sd["mtp.0.enorm.weight"] = torch.ones(h)
    sd["mtp.0.hnorm.weight"] = torch.ones(h)
    sd["mtp.0.norm.weight"] = weights["model.norm.weight"].detach().float().clone()
    return sd


# ---- model identity -------------------------------------------------------------------------

def model_fingerprint(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> str:
    """A short hash of the model's shape and a sample of its weights (bf16-rounded), so a module
    trained for one model is not picked up for another."""
    h = hashlib.sha256()
    fields = ("arch", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
              "num_heads", "num_kv_heads", "head_dim")
    h.update(json.dumps({f: getattr(cfg, f) for f in fields}, sort_keys=True).encode())
    names = ["model.embed_tokens.weight", "model.norm.weight",
             f"model.layers.{cfg.num_layers - 1}.mlp.down_proj.weight"]
    for name in names:
        t = weights[name].reshape(-1)
        sample = t[:: max(1, t.numel() // 4096)].to(torch.bfloat16).view(torch.int16)
        h.update(sample.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- files ----------------------------------------------------------------------------------

def save_module(path: str | Path, sd: dict[str, torch.Tensor], metadata: dict,
                dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write MTP tensors (cast to `dtype`) and metadata (JSON values) as safetensors: to a
    temporary file beside `path`, then renamed over it (a failed write leaves `path` as it was)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}
    meta = {"format": FORMAT, **{k: v if isinstance(v, str) else json.dumps(v)
                                 for k, v in metadata.items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_module(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of an MTP file; a DeepSeek-named file is mapped to our names only
    through `split_checkpoint_mtp` (it needs the main model's layer count)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such MTP module file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # corrupt or truncated
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
    return sd, meta


def shipped_modules() -> list[Path]:
    return sorted(MODULES.glob("*" + SUFFIX))


def find_module(model: LoadedModel, path: str | Path | None = None,
                checkpoint_sd: dict[str, torch.Tensor] | None = None
                ) -> tuple[dict[str, torch.Tensor], str]:
    """The MTP module for `model`: `path` if given; else the checkpoint's own MTP layers; else a
    file next to the model (`<folder>/mtp.safetensors`, `<file stem>.mtp.safetensors`); else a
    module shipped with the package whose metadata names this model's fingerprint."""
    fp = None
    if path is not None:
        sd, meta = read_module(path)
        if num_modules(sd) == 0:  # DeepSeek names
            sd = split_checkpoint_mtp(model.config, sd)[1]
        fp = model_fingerprint(model.config, model.weights)
        if meta.get("model_hash") not in (None, fp):
            warnings.warn(f"{path}: trained for model {meta.get('model_hash')}, this is {fp}",
                          stacklevel=2)
        return sd, str(path)
    if checkpoint_sd:
        return checkpoint_sd, f"{model.source} (checkpoint MTP layers)"
    src = Path(model.source)
    beside = src / "mtp.safetensors" if src.is_dir() else src.with_suffix(SUFFIX)
    if beside.is_file():
        return read_module(beside)[0], str(beside)
    fp = model_fingerprint(model.config, model.weights)
    for p in shipped_modules():
        sd, meta = read_module(p)
        if meta.get("model_hash") == fp:
            return sd, str(p)
    raise RequestError(f"no MTP module for {src.name} (model {fp}): train one with "
                       f"`agentfast train-mtp --model {src} --out {beside}`")


# ---- the module's math ----------------------------------------------------------------------

@dataclass
class MtpWeights:
    eh_proj: torch.Tensor  # [H, 2H]
    enorm: torch.Tensor  # [H] float32
    hnorm: torch.Tensor
    norm: torch.Tensor
    layer: LayerWeights
    embed: torch.Tensor | None = None  # own copy (DeepSeek checkpoints); None: the main model's
    head: torch.Tensor | None = None


def build_module(cfg: ModelConfig, sd: dict[str, torch.Tensor], i: int,
                 device: torch.device | str, dtype: torch.dtype) -> MtpWeights:
    """Module `i` of `sd` on `device` (norm weights float32, the rest `dtype`), through the
    main model's own weight builder. Tensors already there in that dtype are not copied (the
    trainer passes its parameters and keeps their gradients)."""
    p = f"mtp.{i}."
    one = {f"model.layers.0.{k[len(p + 'layer.'):]}": v for k, v in sd.items()
           if k.startswith(p + "layer.")}
    one["model.norm.weight"] = sd[p + "norm.weight"]
    one["model.embed_tokens.weight"] = torch.empty(0)
    w = build_weights(replace(cfg, num_layers=1, tie_word_embeddings=True), one, device, dtype)

    def opt(name: str) -> torch.Tensor | None:
        return sd[p + name].to(device, dtype) if p + name in sd else None

    return MtpWeights(eh_proj=sd[p + "eh_proj.weight"].to(device, dtype),
                      enorm=sd[p + "enorm.weight"].to(device, torch.float32),
                      hnorm=sd[p + "hnorm.weight"].to(device, torch.float32),
                      norm=w.norm, layer=w.layers[0], embed=opt("embed.weight"),
                      head=opt("head.weight"))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, hd], cos/sin [B, T, hd]: engine.rope.apply_rope with a batch dim."""
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    xf = x.float()
    return (xf * c + rotate_half(xf) * s).to(x.dtype)


def layer_forward(cfg: ModelConfig, lw: LayerWeights, x: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor, mask: torch.Tensor,
                  kv: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0
                  ) -> torch.Tensor:
    """One decoder layer over a batch, the same math as engine.model.Transformer's layers.

    x [B, T, H]; cos/sin [B, T, hd] (each row's own positions); mask [B, T, S] bool (True =
    attend). With `kv` = (k, v) buffers [B, kv_heads, capacity, hd], this call's keys and
    values are written at columns start..start+T and the queries see columns 0..start+T (S =
    start+T); without it they see only this call's T keys (S = T). Differentiable without kv."""
    B, T, _ = x.shape
    hd, eps = cfg.head_dim, cfg.rms_norm_eps
    h = rms_norm(x, lw.attn_norm, eps)
    q = F.linear(h, lw.wq, lw.bq).view(B, T, cfg.num_heads, hd)
    k = F.linear(h, lw.wk, lw.bk).view(B, T, cfg.num_kv_heads, hd)
    v = F.linear(h, lw.wv, lw.bv).view(B, T, cfg.num_kv_heads, hd)
    if lw.q_norm is not None:
        q, k = rms_norm(q, lw.q_norm, eps), rms_norm(k, lw.k_norm, eps)
    q, k = _rope(q, cos, sin).transpose(1, 2), _rope(k, cos, sin).transpose(1, 2)
    v = v.transpose(1, 2)  # [B, heads, T, hd]
    if kv is not None:
        kv[0][:, :, start:start + T] = k
        kv[1][:, :, start:start + T] = v
        k, v = kv[0][:, :, :start + T], kv[1][:, :, :start + T]
    out = sdpa(q, k, v, mask[:, None], cfg.group_size > 1)  # [B, nh, T, hd]
    x = x + F.linear(out.transpose(1, 2).reshape(B, T, cfg.q_size), lw.wo, lw.bo)
    h = rms_norm(x, lw.mlp_norm, eps)
    return x + F.linear(F.silu(F.linear(h, lw.w_gate)) * F.linear(h, lw.w_up), lw.w_down)


def mtp_hidden(cfg: ModelConfig, m: MtpWeights, embed: torch.Tensor, h: torch.Tensor,
               next_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
               kv: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0
               ) -> torch.Tensor:
    """h [B, T, H] (main hidden states, or the module's own outputs when chaining), next_ids
    [B, T] (the tokens that follow) -> the module's outputs o [B, T, H] (before its norm)."""
    e = (m.embed if m.embed is not None else embed)[next_ids]
    eps = cfg.rms_norm_eps
    x = F.linear(torch.cat([rms_norm(e, m.enorm, eps), rms_norm(h.to(e.dtype), m.hnorm, eps)],
                           -1), m.eh_proj)
    return layer_forward(cfg, m.layer, x, cos, sin, mask, kv, start)


def mtp_logits(cfg: ModelConfig, m: MtpWeights, head: torch.Tensor, o: torch.Tensor
               ) -> torch.Tensor:
    """Module outputs [..., H] -> logits [..., V] float32 over the (shared) LM head."""
    w = m.head if m.head is not None else head
    return F.linear(rms_norm(o, m.norm, cfg.rms_norm_eps), w).float()


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (how much of a module's K/V,
    computed from `a`, still holds for `b`)."""
    same = min(len(a), len(b))
    if a[:same] != b[:same]:
        same = next(i for i in range(same) if a[i] != b[i])
    return same


def fill_module_kv(cfg: ModelConfig, m: MtpWeights, embed: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor,
                   tokens: list[int], start: int, end: int) -> None:
    """The module's K/V at positions [start, end) into k, v ([kv_heads, capacity, hd]: the
    layer a monokernel with the module runs as layer L): position j from the main model's
    hidden state at j (`hidden` [capacity, H]) and tokens[j + 1], attending to the positions
    before it already there (what the kernel's MTP ops do after each step, for a prompt)."""
    if end <= start:
        return
    assert len(tokens) > end, "position j needs the token after it"
    dev = hidden.device
    mask = causal_mask(torch.arange(start, end, device=dev), end, cfg.sliding_window)
    ids = torch.tensor([tokens[start + 1:end + 1]], dtype=torch.int64, device=dev)
    with torch.inference_mode():
        mtp_hidden(cfg, m, embed, hidden[start:end][None], ids, cos[None, start:end],
                   sin[None, start:end], mask[None], (k[None], v[None]), start)


# ---- the drafter ----------------------------------------------------------------------------

class _MtpState:
    """The module's KV cache for one main sequence and the tokens it was computed from:
    position j holds (h_j, x_{j+1}), valid for j < len(tokens) - 1."""

    def __init__(self, cfg: ModelConfig, max_len: int, device, dtype):
        self.kv = KVCache(replace(cfg, num_layers=1), max_len, device, dtype, initial=64)
        self.tokens: list[int] = []


class MtpDrafter(Drafter):
    """Greedy drafts from an MTP module, chained recursively for k > 1.

    Needs the main model's final hidden states: the backend keeps them in its KV cache
    (`KVCache.hidden`, positions as the K/V) and hands the cache over with `bind` before
    decoding. The module's own KV cache lives per main cache, so sessions keep it too."""

    needs_hidden = True

    def __init__(self, cfg: ModelConfig, modules: list[MtpWeights], embed: torch.Tensor,
                 head: torch.Tensor, max_len: int, source: str = ""):
        super().__init__()
        self.cfg, self.modules, self.embed, self.head = cfg, modules, embed, head
        self.last_prob = 0.0  # the module's probability of its last proposal's first draft
        self.max_len, self.source = max_len, source
        self.device, self.dtype = embed.device, embed.dtype
        self.cos, self.sin = rope_tables(cfg, max_len, self.device)
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._cache: KVCache | None = None
        # A draft token: the module's layer, eh_proj and the LM head, in main-model steps
        # (weights read per step; the embedding is a lookup).
        from .draft_model import forward_params

        h = cfg.hidden_size
        one = forward_params(replace(cfg, num_layers=1)) + 2 * h * h
        self.draft_cost = one / forward_params(cfg)

    @classmethod
    def from_weights(cls, cfg: ModelConfig, sd: dict[str, torch.Tensor], embed: torch.Tensor,
                     head: torch.Tensor, max_len: int, source: str = "") -> MtpDrafter:
        n = check_module(cfg, sd, source or "MTP module")
        mods = [build_module(cfg, sd, i, embed.device, embed.dtype) for i in range(n)]
        return cls(cfg, mods, embed, head, max_len, source)

    def bind(self, cache: KVCache) -> None:
        if getattr(cache, "hidden", None) is None:
            raise RequestError("the MTP drafter needs a KV cache that keeps hidden states "
                               "(reference or monokernel backend with keep_hidden)")
        self._cache = cache

    def _state(self, cache: KVCache) -> _MtpState:
        st = self._states.get(cache)
        if st is None:
            st = self._states[cache] = _MtpState(self.cfg, self.max_len, self.device,
                                                 self.dtype)
        return st

    @torch.inference_mode()
    def _run(self, st: _MtpState, h: torch.Tensor, ids: list[int], start: int) -> torch.Tensor:
        T = len(ids)
        end = start + T
        st.kv.ensure(end)
        mask = causal_mask(torch.arange(start, end, device=self.device), end,
                           self.cfg.sliding_window)
        ids_t = torch.tensor([ids], dtype=torch.int64, device=self.device)
        return mtp_hidden(self.cfg, self.modules[0], self.embed, h[None], ids_t,
                          self.cos[None, start:end], self.sin[None, start:end], mask[None],
                          (st.kv.k, st.kv.v), start)[0]

    @torch.inference_mode()
    def propose(self, history: list[int], k: int) -> list[int]:
        n = len(history)
        if k <= 0 or n < 2 or self._cache is None:
            return []
        st = self._state(self._cache)
        same = common_prefix(st.tokens, history)
        first = min(max(same - 1, 0), n - 2)  # module positions first..n-2 are (re)computed
        h = self._cache.hidden[first:n - 1]  # main hidden states, positions first..n-2
        o = self._run(st, h, history[first + 1:n], first)[-1:]  # [1, H] at position n-2
        st.tokens = list(history)
        drafts: list[int] = []
        pos = n - 1
        m = self.modules[0]
        while True:
            lg = mtp_logits(self.cfg, m, self.head, o)[-1]
            tok = int(torch.argmax(lg))
            if not drafts:
                self.last_prob = float(torch.softmax(lg, -1)[tok])
            drafts.append(tok)
            if len(drafts) == k or pos >= self.max_len:
                return drafts
            o = self._run(st, o, [tok], pos)  # chain: own output as h, the draft as x_{t+1}
            pos += 1


class NgramMtpDrafter(NgramDrafter):
    """The n-gram lookup, and where it proposes nothing an MTP module's next token (one draft,
    when the module gives it at least `floor` probability): the lookup copies, the module
    guesses the text between copies. The monokernel runs both inside its switching kernel (the
    module after each step whose next step the lookup leaves without drafts: kernels/monokernel
    plan(mtp=True), MonokernelBackend.attach_mtp / mtp_lazy),
    where the lookup's rule for a usable draft (match length, running mean) decides when the
    module's draft steps in; host backends call propose. The module's own steps are counted
    in mtp_steps / mtp_accepted as well as in the totals."""

    needs_hidden = True

    def __init__(self, mtp: MtpDrafter, floor: float = 0.3, **kw):
        super().__init__(**kw)
        if not 0.0 <= floor <= 1.0:
            raise RequestError(f"the MTP fallback's probability floor must be in [0, 1], got "
                               f"{floor}")
        self.mtp, self.floor = mtp, floor
        self.mtp_steps = self.mtp_accepted = 0
        self._mtp_last = False  # the last proposal was the module's

    def bind(self, cache) -> None:
        self.mtp.bind(cache)

    @property
    def lookup(self) -> _Lookup:
        """The lookup alone (its propose without the module): what a kernel that runs the
        module itself takes from the host for a launch's first step."""
        return _Lookup(self)

    def propose(self, history: list[int], k: int) -> list[int]:
        out = super().propose(history, k)
        self._mtp_last = False
        if out or k <= 0:
            return out
        out = self.mtp.propose(history, 1)
        if not out or self.mtp.last_prob < self.floor:
            return []
        self._mtp_last = True
        return out

    def observe(self, drafted: list[int], accepted: int) -> None:
        super().observe(drafted, accepted)
        if drafted and self._mtp_last:
            self.observe_mtp(1, accepted, total=False)

    def observe_mtp(self, steps: int, accepted: int, total: bool = True) -> None:
        """Steps that verified the module's draft (one each) and those kept; `total`: add them
        to the drafter's totals too (counts from a kernel, which keeps them apart)."""
        self.mtp_steps += steps
        self.mtp_accepted += accepted
        if total:
            self.observe_counts(steps, steps, accepted)


class _Lookup:
    """NgramMtpDrafter.lookup: proposes by the n-gram rule only."""

    def __init__(self, d: NgramMtpDrafter):
        self.d = d

    def propose(self, history: list[int], k: int) -> list[int]:
        return NgramDrafter.propose(self.d, history, k)


def make_drafter(spec: str, model: LoadedModel, backend, checkpoint_mtp=None) -> Drafter:
    """A drafter by name: "ngram" (with the JSON-escaped view of the prompt, drafters.py) or
    "ngram:noview" (without); "mtp" (the module found by `find_module`) or "mtp:PATH";
    "draft:PATH" (a draft model: any model the engine loads with the target's vocabulary);
    "early:N" (the target's first N layers plus its final norm and LM head, draft_model.py);
    "ngram+mtp" or "ngram+mtp:PATH": the lookup with the MTP module's draft where it has none
    (NgramMtpDrafter; on the monokernel the module runs inside the kernel: attach_mtp)."""
    if spec == "ngram+mtp" or spec.startswith("ngram+mtp:"):
        mtp = make_drafter("mtp" + spec[len("ngram+mtp"):], model, backend, checkpoint_mtp)
        assert isinstance(mtp, MtpDrafter)
        if hasattr(backend, "attach_mtp") and mtp.modules[0].embed is None and (
                mtp.modules[0].head is None):
            backend.attach_mtp(mtp.modules[0])
        return NgramMtpDrafter(mtp, tokenizer=model.tokenizer)
    if spec == "ngram":
        return NgramDrafter(tokenizer=model.tokenizer)
    if spec == "ngram:noview":
        return NgramDrafter()
    kind = spec.split(":", 1)[0]
    if kind in ("mtp", "early", "draft"):
        w = getattr(getattr(backend, "model", None), "w", None)
        if w is None or not getattr(backend, "supports_drafter", False):
            raise RequestError(f"the {backend.name} backend does not run {kind} drafts")
    if spec == "mtp" or spec.startswith("mtp:"):
        sd, src = find_module(model, spec[4:] or None, checkpoint_mtp)
        backend.keep_hidden = True
        return MtpDrafter.from_weights(model.config, sd, w.embed, w.lm_head, backend.max_len,
                                       src)
    if kind == "early":
        from .draft_model import DraftModelDrafter

        n = spec[len("early:"):]
        if not n.isdigit():
            raise RequestError(f"drafter {spec!r}: early:N needs a layer count N")
        return DraftModelDrafter.early_exit(model.config, w, int(n), backend.max_len)
    if kind == "draft" and spec[len("draft:"):]:
        from .draft_model import DraftModelDrafter

        return DraftModelDrafter.load(spec[len("draft:"):], model.config, backend.device,
                                      backend.dtype, backend.max_len, model.tokenizer)
    raise RequestError(f"unknown drafter {spec!r} (ngram, ngram:noview, mtp, mtp:PATH, "
                       "ngram+mtp, ngram+mtp:PATH, draft:PATH, early:N)")
