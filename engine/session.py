"""Sessions: one sequence's KV cache and the tokens it holds, reused across requests.

A request whose tokens start with tokens already in the cache prefills only the rest. Knows
token ids and caches, not text or sampling.
"""

from __future__ import annotations

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
        n = 0
        limit = min(len(self.tokens), len(prompt) - 1)
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        return n


class SessionStore:
    """Sessions by id, least recently used evicted beyond `capacity` (each holds a KV cache)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str, new_cache) -> Session:
        s = self._sessions.get(sid)
        if s is None:
            s = Session(sid, new_cache())
            self._sessions[sid] = s
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(sid)
        return s

    def drop(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)
