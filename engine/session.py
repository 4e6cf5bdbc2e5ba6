"""Sessions: one sequence's KV cache and the tokens it holds, reused across requests.

A request whose tokens start with tokens already in the cache prefills only the rest. A dropped
or evicted session's cache is kept (one) for the next new session: to a cache, a new session is
a prompt that shares no prefix with what it holds, which backends already handle (positions
past the reused prefix are written before they are read), and it needs no allocation (a KV
cache of the embedded model is ~12 MB of zeros on CPU, ~1 ms) nor, on the graph backend, new
CUDA graphs. Knows token ids and caches, not text or sampling.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    id: str
    cache: Any  # the backend's per-sequence state
    tokens: list[int] = field(default_factory=list)  # tokens whose K/V are in `cache`

    def reusable_prefix(self, prompt: list[int]) -> int:
        """How many leading prompt tokens already have K/V here. At least one prompt token is
        always recomputed, since its logits are needed to sample the next one."""
        limit = min(len(self.tokens), len(prompt) - 1)
        if limit > 0 and self.tokens[:limit] == prompt[:limit]:  # a conversation that grew
            return limit
        n = 0
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        return n


class SessionStore:
    """Sessions by id, least recently used evicted beyond `capacity` (each holds a KV cache).
    Thread-safe (the engine's worker creates sessions, an agent may drop its own)."""

    def __init__(self, capacity: int = 8, spare: int = 1):
        self.capacity, self.spare = capacity, spare
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._free: list[Any] = []  # caches of dropped sessions, reused by new ones
        self._lock = threading.Lock()

    def get(self, sid: str, new_cache) -> Session:
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                s = Session(sid, self._free.pop() if self._free else new_cache())
                self._sessions[sid] = s
                while len(self._sessions) > self.capacity:
                    self._keep(self._sessions.popitem(last=False)[1].cache)
            self._sessions.move_to_end(sid)
            return s

    def drop(self, sid: str) -> None:
        with self._lock:
            s = self._sessions.pop(sid, None)
            if s is not None:
                self._keep(s.cache)

    def _keep(self, cache: Any) -> None:
        if len(self._free) < self.spare:
            self._free.append(cache)

    def __len__(self) -> int:
        return len(self._sessions)
