"""Stop strings in a streamed text (the OpenAI-compatible `stop` parameter)."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Cuts a streamed text at the first of some stop strings, which may span deltas: text that
    could be the start of a stop string is held back until the next delta settles it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, delta: str) -> str:
        """The part of `delta` (with what was held) that is certainly before any stop string."""
        if not self.stops:
            return delta
        text = self._held + delta
        hits = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[: min(hits)]
        keep = 0
        for size in range(min(len(text), max(map(len, self.stops)) - 1), 0, -1):
            if any(stop.startswith(text[-size:]) for stop in self.stops):
                keep = size
                break
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
