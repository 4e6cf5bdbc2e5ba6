"""Server metrics in the Prometheus text format (no client library needed).

Counters and histograms fed by the scheduler (one record per finished generation) and by the
HTTP layer (one per response). Knows numbers, not engines or requests.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from agentfast.engine import GenerationResult

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts = buckets, [0] * len(buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b}"}} {c}' for b, c in
               zip(self.buckets, self.counts, strict=True)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}",
                f"{name}_count {self.count}"]
        return out


class Metrics:
    def __init__(self, drafter: Any = None):
        self.lock = threading.Lock()
        # the engine's speculative-decoding drafter (agentfast.spec_decode.Drafter: it counts
        # verification steps, drafted and accepted tokens), or None
        self.drafter = drafter
        self.http: Counter[tuple[str, int]] = Counter()
        self.queued = 0  # waiting for the engine
        self.running = 0  # 0 or 1: the engine runs one request at a time
        self.generations = Counter()  # by finish: stop, length, cancelled, timeout, error
        self.prompt_tokens = self.cached_tokens = self.output_tokens = 0
        self.decode_s = 0.0
        self.last_tokens_per_s = 0.0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.queue_wait = Histogram(TTFT_BUCKETS)

    def request(self, path: str, status: int) -> None:
        with self.lock:
            self.http[(path, status)] += 1

    def queue(self, delta: int) -> None:
        with self.lock:
            self.queued += delta

    def started(self, waited_s: float) -> None:
        with self.lock:
            self.queued -= 1
            self.running = 1
            self.queue_wait.observe(waited_s)

    def finished(self, r: GenerationResult | None, outcome: str) -> None:
        with self.lock:
            self.running = 0
            self.generations[outcome] += 1
            if r is None:
                return
            n = len(r.token_ids)
            self.prompt_tokens += r.prompt_tokens
            self.cached_tokens += r.reused_tokens
            self.output_tokens += n
            self.decode_s += r.decode_s
            if n:
                self.ttft.observe(r.ttft_s)
            if n > 1:
                self.tpot.observe(r.decode_s / (n - 1))
                self.last_tokens_per_s = r.decode_tokens_per_s

    def skipped(self, outcome: str) -> None:
        """A queued request that never ran (cancelled or timed out while waiting)."""
        with self.lock:
            self.queued -= 1
            self.generations[outcome] += 1

    def render(self) -> str:
        with self.lock:
            return "\n".join(self._lines()) + "\n"

    def _lines(self) -> list[str]:
        def metric(name: str, kind: str, help_: str, *rows: str) -> list[str]:
            return [f"# HELP agentfast_{name} {help_}", f"# TYPE agentfast_{name} {kind}",
                    *(f"agentfast_{name}{r}" for r in rows)]

        reuse = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        avg = self.output_tokens / self.decode_s if self.decode_s else 0.0
        out: list[str] = []
        out += metric("http_requests_total", "counter", "HTTP responses by path and status",
                      *(f'{{path="{p}",status="{s}"}} {n}' for (p, s), n in
                        sorted(self.http.items())))
        out += metric("generations_total", "counter", "Generations by outcome "
                      "(stop, length, cancelled, timeout, error)",
                      *(f'{{outcome="{k}"}} {n}' for k, n in sorted(self.generations.items())))
        out += metric("requests_cancelled_total", "counter", "Generations cancelled by a "
                      "client disconnect", f" {self.generations['cancelled']}")
        out += metric("queue_depth", "gauge", "Requests waiting for the engine",
                      f" {self.queued}")
        out += metric("running_requests", "gauge", "Requests generating now (0 or 1)",
                      f" {self.running}")
        out += metric("prompt_tokens_total", "counter", "Prompt tokens", f" {self.prompt_tokens}")
        out += metric("prompt_tokens_cached_total", "counter", "Prompt tokens whose KV was "
                      "reused from the session", f" {self.cached_tokens}")
        out += metric("prefix_reuse_ratio", "gauge", "Cached / prompt tokens, all requests",
                      f" {reuse:.6f}")
        out += metric("generation_tokens_total", "counter", "Generated tokens",
                      f" {self.output_tokens}")
        out += metric("decode_tokens_per_second", "gauge", "Decode speed: last request, and "
                      "over all requests", f'{{window="last"}} {self.last_tokens_per_s:.3f}',
                      f'{{window="all"}} {avg:.3f}')
        d = self.drafter
        out += metric("spec_decode_accepted_length", "gauge", "Mean accepted draft tokens per "
                      "verification step (0 without a drafter)",
                      f" {d.mean_accepted if d is not None else 0.0:.6f}")
        out += metric("spec_decode_draft_tokens_total", "counter", "Draft tokens verified",
                      f" {d.drafted if d is not None else 0}")
        out += metric("spec_decode_accepted_tokens_total", "counter", "Draft tokens accepted",
                      f" {d.accepted if d is not None else 0}")
        out += metric("time_to_first_token_seconds", "histogram", "Generation start to first "
                      "token", *(x.removeprefix("x") for x in self.ttft.lines("x")))
        out += metric("time_per_output_token_seconds", "histogram", "Decode time per token "
                      "after the first", *(x.removeprefix("x") for x in self.tpot.lines("x")))
        out += metric("queue_wait_seconds", "histogram", "Time a request waited for the "
                      "engine", *(x.removeprefix("x") for x in self.queue_wait.lines("x")))
        return out
