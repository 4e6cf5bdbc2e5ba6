"""The engine: a loaded model, a backend, sessions, and the generation loop.

Turns a prompt (text, token ids, or chat messages) into streamed text: prefix reuse through
sessions, prefill, decode on the backend, incremental detokenization, stop strings, limits.
Knows nothing about HTTP or agents.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .backends import MAX_TOP_LOGPROBS, Backend, TokenLogprob, create_backend
from .errors import ContextLengthError, RequestError
from .loaders import LoadedModel, Progress, load_model
from .sampling import SamplingParams
from .session import Session, SessionStore
from .stops import StopMatcher
from .tokenizer import IncrementalDecoder

if TYPE_CHECKING:
    from agentfast.spec_decode import Drafter

    from .constraints import TokenAutomaton


@dataclass
class Chunk:
    text: str  # new text (may be empty while a multi-byte character or stop string is pending)
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per token id, when asked for


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated tokens, without the stop token
    finish_reason: str  # "stop" (EOS, stop token or stop string), "length", "cancelled"
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose K/V came from the session
    prefilled_tokens: int  # prompt tokens computed now
    stop: str | int | None = None  # the stop string or token id that ended it
    ttft_s: float = 0.0  # request start -> first token
    decode_s: float = 0.0  # first token -> last token
    timings: dict[str, float] = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None  # per generated token, when asked for
    # speculative decoding (an engine with a drafter): verification steps that carried drafts,
    # draft tokens verified, and how many of them were accepted
    draft_steps: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0

    @property
    def accepted_draft_length(self) -> float:
        """Mean accepted draft tokens per verification step (0 without a drafter)."""
        return self.accepted_draft_tokens / self.draft_steps if self.draft_steps else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        n = len(self.token_ids) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0


class Generation:
    """An in-progress generation: iterate for `Chunk`s; `result` is set when it ends.
    `close()` cancels it (the backend stops at its next token)."""

    def __init__(self, it: Iterator[Chunk]):
        self._it = it
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[Chunk]:
        return self._it

    def close(self) -> None:
        self._it.close()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Engine:
    def __init__(self, model: LoadedModel, backend: str = "reference",
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 max_context: int | None = None, max_sessions: int = 8,
                 drafter: Drafter | str | None = None):
        self.model = model
        # Speculative decoding (agentfast.spec_decode.Drafter): reference and monokernel
        # backends (MTP, which reads hidden states: reference only). A name builds one: "ngram",
        # "mtp" (the model's MTP module: its checkpoint's, a file beside it, or one shipped for
        # the embedded model), "mtp:PATH", "draft:PATH" (a smaller model, same tokenizer),
        # "early:N" (the target's first N layers).
        self.drafter = drafter
        self.config, self.tokenizer = model.config, model.tokenizer
        self.device = torch.device(device) if device else default_device()
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        limit = self.config.max_position_embeddings
        self.max_context = min(max_context, limit) if max_context else limit
        from .model import check_weights

        weights, mtp = model.weights, None
        if any(k.startswith(f"model.layers.{self.config.num_layers}.") for k in weights):
            from agentfast.spec_decode.mtp import split_checkpoint_mtp  # DeepSeek-style MTP

            weights, mtp = split_checkpoint_mtp(self.config, weights)
        check_weights(self.config, weights, str(model.source))
        self.backend: Backend = create_backend(backend, self.config, weights, self.device,
                                               self.dtype, self.max_context)
        if drafter is not None and not self.backend.supports_drafter:
            raise RequestError(f"the {backend} backend does not take a drafter")
        if isinstance(drafter, str):
            from agentfast.spec_decode.mtp import make_drafter

            self.drafter = make_drafter(drafter, model, self.backend, mtp)
        if getattr(self.drafter, "needs_hidden", False):  # MTP reads hidden states from caches
            self.backend.keep_hidden = True
        self.sessions = SessionStore(max_sessions)
        eos = set(self.tokenizer.eos_ids) | set(self.config.eos_token_ids)
        self.eos_ids = frozenset(eos)

    @classmethod
    def load(cls, path: str | None = None, progress: Progress | None = None, **kw: Any) -> Engine:
        return cls(load_model(path, progress), **kw)

    # ---- prompts -------------------------------------------------------------------------

    def encode_chat(self, messages: list[dict[str, Any]], tools: list[dict] | None = None,
                    add_generation_prompt: bool = True) -> list[int]:
        return self.tokenizer.encode_chat(messages, tools=tools,
                                          add_generation_prompt=add_generation_prompt)

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        return self.tokenizer.encode(prompt, add_special=True) if isinstance(prompt, str) else (
            list(prompt))

    # ---- generation ----------------------------------------------------------------------

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None,
               session: str | None = None, logprobs: int | None = None) -> Generation:
        """Start generating from a raw prompt (text or token ids). With `session`, K/V of a
        matching prefix from that session's earlier requests is reused. With `logprobs=k`
        (0..20), each chunk carries its tokens' log probabilities and k alternatives, taken
        from the logits the decode step computed (the model's distribution before
        temperature, top-k/top-p and constraints); backends without it raise RequestError."""
        params = params or SamplingParams()
        ids = self._prompt_ids(prompt)
        self._check_length(ids)
        self._check_logprobs(logprobs)
        sess = self.sessions.get(session or f"_once_{uuid.uuid4().hex}", self.backend.new_cache)
        g = Generation(iter(()))
        g._it = self._run(g, sess, ids, params, drop_after=session is None, logprobs=logprobs)
        return g

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                 session: str | None = None, logprobs: int | None = None) -> GenerationResult:
        g = self.stream(prompt, params, session, logprobs)
        for _ in g:
            pass
        assert g.result is not None
        return g.result

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams | None = None,
             session: str | None = None, tools: list[dict] | None = None) -> GenerationResult:
        return self.generate(self.encode_chat(messages, tools), params, session)

    def _check_length(self, ids: list[int]) -> None:
        if not ids:
            raise ContextLengthError("the prompt is empty (0 tokens)")
        if len(ids) >= self.max_context:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens; the context holds {self.max_context} "
                f"(model max_position_embeddings={self.config.max_position_embeddings}, "
                f"engine max_context={self.max_context})"
            )

    def _check_logprobs(self, k: int | None) -> None:
        if k is None:
            return
        if not self.backend.supports_logprobs:
            raise RequestError(f"the {self.backend.name} backend does not report logprobs "
                               "(use --backend reference)")
        if not 0 <= k <= MAX_TOP_LOGPROBS:
            raise RequestError(f"logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {k}")

    def _automaton(self, params: SamplingParams) -> TokenAutomaton | None:
        """The compiled constraint of `params` (memoized per tokenizer), or None."""
        if params.constraint is None:
            return None
        if not self.backend.supports_constraints:
            raise RequestError(f"the {self.backend.name} backend does not support constraints "
                               "(use --backend reference)")
        from .constraints import compile as compile_constraint

        return compile_constraint(params.constraint, self.tokenizer, tuple(self.eos_ids))

    def _run(self, g: Generation, sess: Session, ids: list[int], params: SamplingParams,
             drop_after: bool, logprobs: int | None = None) -> Iterator[Chunk]:
        t0 = time.perf_counter()
        automaton = self._automaton(params)
        reused = sess.reusable_prefix(ids)
        logits = self.backend.prefill(sess.cache, ids[reused:], reused)
        sess.tokens = list(ids)
        stop_ids = frozenset(params.stop_token_ids) | (
            frozenset() if params.ignore_eos else self.eos_ids)
        if automaton is not None:  # under a constraint EOS ends the (complete) output
            stop_ids |= frozenset(automaton.eos_ids)
        max_new = min(params.max_tokens, self.max_context - len(ids))
        decoder = IncrementalDecoder(self.tokenizer)
        stops = StopMatcher(params.stop)
        out_ids: list[int] = []
        text: list[str] = []
        finish, stop_by, t_first = "length", None, None
        kw: dict[str, Any] = {} if automaton is None else {"automaton": automaton}
        drafter = self.drafter
        if drafter is not None:
            if hasattr(drafter, "begin"):  # (the n-gram drafter escapes the prompt for lookup)
                drafter.begin(ids)
            kw.update(drafter=drafter, history=ids)
            drafted0 = (drafter.steps, drafter.drafted, drafter.accepted)  # its running counts
        lps: list[TokenLogprob] | None = None if logprobs is None else []
        if lps is not None:
            kw["logprobs"] = logprobs  # the backend yields TokenLogprobs
        steps = self.backend.decode(sess.cache, logits, len(ids), params, stop_ids, max_new, **kw)
        try:
            for item in steps:
                lp, tok = (None, item) if lps is None else (item, item.token_id)
                if t_first is None:
                    t_first = time.perf_counter()
                sess.tokens.append(tok)
                if tok in stop_ids:
                    finish, stop_by = "stop", tok
                    break
                out_ids.append(tok)
                if lp is not None:
                    lps.append(lp)
                delta = stops.push(decoder.push(tok))
                text.append(delta)
                yield Chunk(delta, [tok], [lp] if lp is not None else [])
                if stops.stopped is not None:
                    break
            if stops.stopped is None:  # what the decoder and the stop matcher held back
                tail = stops.push(decoder.flush())
                if stops.stopped is None:
                    tail += stops.flush()
                text.append(tail)
                if tail:
                    yield Chunk(tail, [])
            if stops.stopped is not None:
                finish, stop_by = "stop", stops.stopped
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            steps.close()
            # The last sampled token has no K/V yet: the cache holds all tokens but that one.
            if len(sess.tokens) > len(ids):
                sess.tokens.pop()
            t_end = time.perf_counter()
            g.result = GenerationResult(
                text="".join(text), token_ids=out_ids, finish_reason=finish,
                prompt_tokens=len(ids), reused_tokens=reused, prefilled_tokens=len(ids) - reused,
                stop=stop_by, ttft_s=(t_first or t_end) - t0, decode_s=t_end - (t_first or t_end),
                logprobs=lps,
            )
            if drafter is not None:
                g.result.draft_steps = drafter.steps - drafted0[0]
                g.result.draft_tokens = drafter.drafted - drafted0[1]
                g.result.accepted_draft_tokens = drafter.accepted - drafted0[2]
            if drop_after:
                self.sessions.drop(sess.id)
