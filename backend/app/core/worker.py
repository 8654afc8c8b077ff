"""A model worker: one thread per model, with a bounded queue in front of it.

Model inference blocks. Each model gets a single worker thread, so the event loop stays free and one
model never runs two inferences at once; at most `queue_size` further calls may wait. One more is
refused at once with `OverloadedError` (503 + Retry-After) instead of piling up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar, cast

from backend.app.core.errors import OverloadedError

P = ParamSpec("P")
T = TypeVar("T")

_END = object()


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

    def check(self) -> None:
        """Refuse now (503) if a new request would be refused: for work admitted up front."""
        if self._admitted >= self.capacity:
            raise OverloadedError(
                f"the {self.name} model is busy ({self._admitted} requests in progress); retry shortly",
                retry_after_s=2,
            )

    def _admit(self, check: bool) -> None:
        with self._lock:
            if check:
                self.check()
            self._admitted += 1

    def _submit(self, check: bool, fn: Callable[[], T]) -> Future[T]:
        self._admit(check)
        # The slot is released when the thread is done, not when the awaiting request goes away:
        # a cancelled request whose inference already started still occupies the model.
        future = self._executor.submit(fn)
        future.add_done_callback(self._release)
        return future

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on this model's thread; 503 when the queue is full."""
        return await asyncio.wrap_future(self._submit(True, lambda: fn(*args, **kwargs)))

    async def follow_up(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a further step of work that was already admitted (the next sentence of a streamed
        reply). Never refused: a stream that has started is not cut off by later arrivals."""
        return await asyncio.wrap_future(self._submit(False, lambda: fn(*args, **kwargs)))

    async def stream(
        self, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]:
        """Iterate `fn(*args, **kwargs)` on this model's thread, yielding its items as they come.

        Admission is as for `run`. When the consumer stops early (break, cancellation, a client
        gone), the iterator is closed on the worker thread after its current item, so a generator
        backend can stop its inference in its `finally`; the slot is held until then.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: object, error: BaseException | None = None) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, (item, error))
            except RuntimeError:
                stop.set()  # the loop is closed: nobody is listening any more

        def produce() -> None:
            iterator: Iterator[T] | None = None
            try:
                iterator = fn(*args, **kwargs)
                for item in iterator:
                    if stop.is_set():
                        break
                    deliver(item)
                    if stop.is_set():
                        break
            except Exception as e:
                deliver(_END, e)
                return
            finally:
                close = getattr(iterator, "close", None)  # generators: run their `finally` now
                if close is not None:
                    close()
            deliver(_END)

        self._submit(True, produce)
        try:
            while True:
                item, error = await items.get()
                if item is _END:
                    if error is not None:
                        raise error
                    return
                yield cast(T, item)
        finally:
            stop.set()

    def _release(self, _: object) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
