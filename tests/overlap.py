"""How many calls are inside a block at once, and the most there ever were: for tests that some
work never overlaps (a model worker's calls, turns on the cores)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Overlap:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    @contextmanager
    def inside(self, hold_s: float) -> Iterator[None]:
        """Count the block as inside, for at least `hold_s` (so that overlaps have time to show)."""
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            yield
            time.sleep(hold_s)
        finally:
            with self._lock:
                self.now -= 1
