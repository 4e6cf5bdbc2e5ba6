"""Stop strings on streamed text: hold back what could still become a stop string.

Knows only text. `push(delta)` returns the text that is safe to emit; once a stop string
appears, everything from it on is dropped and `stopped` is set.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""  # all text seen
        self.emitted = 0  # chars of `text` already returned
        self.stopped: str | None = None

    def push(self, delta: str) -> str:
        if self.stopped is not None or not delta:
            return ""
        search_from = max(0, len(self.text) - self.hold)
        self.text += delta
        if self.stops:
            hits = [(i, s) for s in self.stops if (i := self.text.find(s, search_from)) >= 0]
            if hits:
                cut, self.stopped = min(hits)
                out = self.text[self.emitted:cut]
                self.text = self.text[:cut]
                self.emitted = cut
                return out
        safe = len(self.text) - self._partial_suffix()
        out = self.text[self.emitted:safe]
        self.emitted = max(self.emitted, safe)
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        """At the end of generation (no stop string): the held-back tail."""
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out
