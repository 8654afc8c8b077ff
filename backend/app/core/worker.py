"""A model worker: one thread per model, with a bounded queue in front of it.

Model inference blocks. Each model gets a single worker thread, so the event loop stays free and one
model never runs two inferences at once; at most `queue_size` further calls may wait. One more is
refused at once with `OverloadedError` (503 + Retry-After) instead of piling up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from backend.app.core.errors import OverloadedError

P = ParamSpec("P")
T = TypeVar("T")


class ModelWorker:
    """Runs blocking calls for one model in its own thread, admitting at most 1 + queue_size."""

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self.capacity = queue_size + 1
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-worker")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def pending(self) -> int:
        """Calls admitted and not yet finished (running + waiting)."""
        return self._admitted

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on this model's thread; 503 when the queue is full."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise OverloadedError(
                    f"the {self.name} model is busy ({self._admitted} requests in progress); retry shortly",
                    retry_after_s=2,
                )
            self._admitted += 1
        # The slot is released when the thread is done, not when the awaiting request goes away:
        # a cancelled request whose inference already started still occupies the model.
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: object) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
