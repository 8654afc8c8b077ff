"""Threads that run queued calls by priority rather than arrival.

A model worker's calls run in the order their work was admitted (core/order.py), not the order
they reach the queue: a spoken turn's reply, admitted with the turn, goes ahead of a /chat admitted
after the turn began, because the turn's admission counted on nothing admitted later going first;
and a spoken turn goes ahead of the single-stage work admitted just before it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar, cast

T = TypeVar("T")


class OrderedThreads:
    """A model's threads, taking queued calls by priority (their work's place in the order of
    admission), then by arrival. A call dropped while it waits (its future cancelled) is skipped."""

    def __init__(self, name: str, threads: int, idle_s: float = 60.0) -> None:
        self.name = name
        self.threads = threads
        self.idle_s = idle_s
        """A thread with nothing to do for this long ends (another starts with the next call)."""
        self._queue: list[tuple[int, int, Future[object], Callable[[], object]]] = []
        self._arrivals = itertools.count()
        self._changed = threading.Condition()
        self._closed = False
        self._started = 0
        self._idle = 0

    def submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError(f"the {self.name} worker is shut down")
            item = (
                priority,
                next(self._arrivals),
                cast("Future[object]", future),
                cast(Callable[[], object], fn),
            )
            heapq.heappush(self._queue, item)
            if self._idle:
                self._changed.notify()
            # A woken thread counts as idle until it runs: more calls than idle threads start one.
            if len(self._queue) > self._idle and self._started < self.threads:
                self._started += 1
                name = f"{self.name}-worker_{self._started - 1}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        return future

    def _next(self) -> tuple[Future[object], Callable[[], object]] | None:
        """The next call to run, or None when the thread should end (shut down, or idle)."""
        with self._changed:
            self._idle += 1
            try:
                while not self._queue and not self._closed:
                    if not self._changed.wait(self.idle_s) and not self._queue:
                        break
            finally:
                self._idle -= 1
            if not self._queue:
                self._started -= 1
                return None
            _, _, future, fn = heapq.heappop(self._queue)
            return future, fn

    def _serve(self) -> None:
        while (call := self._next()) is not None:
            self._run(*call)
            del call  # nothing of a call outlives it on this thread while it waits for the next

    @staticmethod
    def _run(future: Future[object], fn: Callable[[], object]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # dropped while it waited
        try:
            result = fn()
        except BaseException as e:
            future.set_exception(e)
        else:
            future.set_result(result)

    def first_waiting(self) -> int | None:
        """The priority of the first call waiting for a thread (None: none waits); calls dropped
        while they waited are left out."""
        with self._changed:
            while self._queue and self._queue[0][2].cancelled():
                heapq.heappop(self._queue)
            return self._queue[0][0] if self._queue else None

    def shutdown(self) -> None:
        with self._changed:
            self._closed = True
            queued, self._queue = self._queue, []
            self._changed.notify_all()
        for _, _, future, _ in queued:
            future.cancel()
