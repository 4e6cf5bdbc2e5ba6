"""One engine, one request at a time: a FIFO queue and one worker thread per engine.

Requests wait in arrival order (fair); the worker thread runs each generation to its end and
posts every chunk to the asyncio loop of the request that asked, so event loops never block on
the model. Between tokens the worker checks the request's cancel flag (client gone) and its
deadline (per-request timeout); either closes the generation (`Generation.close()`). Knows the
engine's streaming API, not HTTP or OpenAI shapes.

An in-process caller may instead run a generation on its own thread when the engine is idle
(`hold()`, then `run_here()`): no thread hand-off before the first token or after the last,
which is most of what an agent turn spends outside the model and its tools. Meant for backends
whose decode runs ahead of the host (the monokernel writes tokens to a host-visible ring by
itself): there the caller's per-token work does not slow the decode.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from agentfast.engine import Engine, GenerationResult, SamplingParams
from agentfast.engine.errors import AgentfastError, ContextLengthError

from .logprobs import TokenLogprob
from .metrics import Metrics
from .protocol import APIError

log = logging.getLogger("agentfast.server")


@dataclass
class Work:
    ids: list[int]
    params: SamplingParams
    session: str
    top_logprobs: int | None = None  # None: no logprobs; n >= 0: with n alternatives
    # called on the worker thread with the result, before Done is posted (the requester's
    # bookkeeping, done while the tokenizer is warm there, not after a thread hop)
    on_done: Callable[[GenerationResult], None] | None = None


@dataclass
class Step:
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Done:
    result: GenerationResult


class Job:
    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop, timeout: float | None):
        self.work, self.loop = work, loop
        self.q: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self.deadline = self.submitted + timeout if timeout else float("inf")
        self.timeout = timeout

    def cancel(self) -> None:
        """Stop at the next token (or skip, if still queued). Safe to call more than once."""
        self.cancelled.set()

    def post(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.q.put_nowait, item)
        except RuntimeError:  # the requester's loop is gone
            self.cancelled.set()

    def timed_out(self) -> APIError:
        return APIError(f"the request did not finish within the server's request timeout of "
                        f"{self.timeout:g} s", status=408, code="request_timeout",
                        type="timeout_error")

    async def events(self) -> AsyncIterator[Step | Done]:
        """Steps as produced, then Done; raises the error if the generation failed."""
        while True:
            item = await self.q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Done):
                return


class Scheduler:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.metrics = Metrics(getattr(engine, "drafter", None))
        self._q: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a generation runs (the worker's or a caller's)

    def submit(self, work: Work, timeout: float | None) -> Job:
        job = Job(work, asyncio.get_running_loop(), timeout)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="agentfast-engine",
                                                daemon=True)
                self._thread.start()
        self.metrics.queue(+1)
        self._q.put(job)
        return job

    def hold(self) -> bool:
        """Take the engine for generations on the calling thread (`run_here`): True when no
        request is queued (arrival order is kept) and none is running. `release()` gives it
        back; until then the worker waits."""
        if not self._q.empty():
            return False
        return self._busy.acquire(blocking=False)

    def release(self) -> None:
        self._busy.release()

    def run_here(self, work: Work) -> Iterator[Step | Done]:
        """While held: the generation of `work` on this thread, Steps as the engine produces
        them, then Done (the engine's errors raise). Closing it early cancels the generation."""
        self.metrics.queue(+1)
        self.metrics.started(0.0)
        yield from self._generate(work)

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._q.put(None)
                self._thread.join()
                self._thread = None

    def _loop(self) -> None:
        while (job := self._q.get()) is not None:
            if job.cancelled.is_set():
                self.metrics.skipped("cancelled")
                log.info("request cancelled while queued")
                continue
            if time.monotonic() > job.deadline:
                self.metrics.skipped("timeout")
                job.post(job.timed_out())
                continue
            self.metrics.started(time.monotonic() - job.submitted)
            try:
                with self._busy:
                    for item in self._generate(job.work, job):
                        job.post(item)
            except BaseException as e:  # a bug: answer it, keep serving
                log.exception("generation failed")
                self.metrics.finished(None, "error")
                job.post(e if isinstance(e, AgentfastError | APIError) else APIError(
                    f"internal error: {type(e).__name__}: {e}", status=500, type="server_error"))

    def _generate(self, w: Work, job: Job | None = None) -> Iterator[Step | Done | APIError]:
        """One generation: Steps, then Done, or a job's timeout error (the job's cancel flag and
        deadline are checked between tokens). Closed early, it cancels the generation."""
        try:
            gen = self.engine.stream(w.ids, w.params, session=w.session, logprobs=w.top_logprobs)
        except ContextLengthError as e:
            raise APIError(str(e), param="messages", code="context_length_exceeded") from None
        outcome = None
        try:
            for chunk in gen:
                if job is not None:
                    if job.cancelled.is_set():
                        outcome = "cancelled"
                        break
                    if time.monotonic() > job.deadline:
                        outcome = "timeout"
                        break
                yield Step(chunk.text, chunk.token_ids, chunk.logprobs or None)
        except GeneratorExit:  # the caller of run_here() left
            gen.close()  # (sets gen.result; closing again below is a no-op)
            self.metrics.finished(gen.result, "cancelled")
            log.info("generation cancelled (session %s)", w.session)
            raise
        finally:
            gen.close()
        r = gen.result
        outcome = outcome or (r.finish_reason if r else "error")
        self.metrics.finished(r, outcome)
        if outcome in ("cancelled", "timeout"):
            n = len(r.token_ids) if r else 0
            log.info("generation %s after %d tokens (session %s)", outcome, n, w.session)
        if outcome == "timeout":
            assert job is not None
            yield job.timed_out()
            return
        assert r is not None
        if w.on_done is not None:
            w.on_done(r)
        yield Done(r)


_SCHEDULERS: weakref.WeakKeyDictionary[Engine, Scheduler] = weakref.WeakKeyDictionary()
_SCHEDULERS_LOCK = threading.Lock()


def scheduler_for(engine: Engine) -> Scheduler:
    """The one scheduler of an engine, shared by every app serving it (one request at a time
    per engine, whatever the number of apps or clients)."""
    with _SCHEDULERS_LOCK:
        s = _SCHEDULERS.get(engine)
        if s is None:
            s = _SCHEDULERS[engine] = Scheduler(engine)
        return s
