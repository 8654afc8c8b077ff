"""A model worker: one thread per model, with a bounded queue in front of it.

Model inference blocks. Each model gets a single worker thread, so the event loop stays free and one
model never runs two inferences at once; at most `queue_size` further calls may wait. One more is
refused at once with `OverloadedError` (503 + Retry-After) instead of piling up.

Queued calls run in the order their work was admitted (core/order.py: a spoken turn's calls go
ahead of single-stage work admitted just before the turn), not of arrival. Work is
cancellable: when the awaiting request goes away (its client disconnected, or the stage ran past
its timeout: `StageTimeoutError`, 504), a call still queued is dropped, and a call already running
is asked to stop (core/cancellation.py), so the slot is freed within one unit of its work.

A streamed response must be refused before its 200 is sent, yet its work starts only when the
body is sent: `admit()` takes the slot at once and hands it to that later work (`Admission.stream`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar, cast

from backend.app.core.admission import check_alone, take_reservation, turn_request
from backend.app.core.backlog import Backlog, ServiceTimes, budget, run_measured, work_units
from backend.app.core.cancellation import cancellable, raise_if_cancelled
from backend.app.core.errors import OverloadedError, StageTimeoutError
from backend.app.core.memory import request_trim
from backend.app.core.order import admitted, goes_ahead, next_order, order, waiting_behind
from backend.app.core.ordered import OrderedThreads

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E")

_END = object()

_place = order
"""On a worker thread: the running call's place in the order of admission (core/cpu.py reads it)."""

stage_times: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "stage_times", default=None
)
"""Per request (set by the request middleware): milliseconds each model worker spent on it."""


class _Job:
    """One admitted call: its future, and the flag that asks it to stop."""

    def __init__(self, future: Future[object], cancel: threading.Event) -> None:
        self.future = future
        self.cancel = cancel

    def stop(self) -> None:
        self.cancel.set()
        self.future.cancel()  # succeeds only while still queued


class Admission:
    """A slot taken now for work that starts later; the work it runs keeps the slot until it is
    done. Released by `release()`, or when dropped unused (a response that never started)."""

    def __init__(self, worker: ModelWorker, reserved: int | None, order: int, part: bool = False) -> None:
        self.worker = worker
        self.order = order  # its place in the order of admission, kept on the model and the cores
        self.learn = True  # its time says how fast work goes (not once cut short)
        self._part = part
        """A stage of work admitted as a whole elsewhere (a spoken turn's reply), which reaches its
        stage only when its call starts (`Backlog.reached`)."""
        self._held = True
        self._reserved = reserved
        """Its place in the model's backlog, counted from admission until its work is done."""

    def reservation(self) -> int | None:
        """The backlog entry a single call takes over (once), given back when that call is done."""
        reserved, self._reserved = self._reserved, None
        return reserved

    def _taken_up(self) -> int | None:
        """The backlog entry its one call takes over (`reservation`), reached now."""
        key = self.reservation()
        if key is not None and self._part:
            self.worker.backlog.reached(key)
        return key

    @property
    def held(self) -> bool:
        return self._held

    def _take(self) -> None:
        if not self._held:
            raise RuntimeError(f"this {self.worker.name} admission was already used or released")
        self._held = False

    def release(self) -> None:
        """Give the slot back if no work has taken it (idempotent)."""
        reserved = self.reservation()
        if reserved is not None:
            self.worker.backlog.done(reserved, self.learn)
        if self._held:
            self._held = False
            self.worker._release(None)

    def __del__(self) -> None:
        self.release()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """As `ModelWorker.run`, in this slot."""
        self._take()
        job = self.worker._start(
            lambda: fn(*args, **kwargs), key=self._taken_up(), order=self.order, learn=self.learn
        )
        return cast(T, await self.worker._await(job))

    async def step(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one call of work made of several (the segments of a text) in this slot, and keep
        the slot (and the backlog entry, for the whole work) for the next call; `release()` gives
        them back after the last."""
        if not self._held:
            raise RuntimeError(f"this {self.worker.name} admission was already used or released")
        job = self.worker._start(
            lambda: fn(*args, **kwargs), release=False, key=self._reserved, kept=True, order=self.order
        )
        try:
            return cast(T, await self.worker._await(job))
        except BaseException:
            self.learn = False  # work cut short says nothing of how fast work goes
            raise

    def stream(
        self, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]:
        """As `ModelWorker.stream`, in this slot (taken when the iteration starts, kept until then)."""
        return self.worker._iterate(self, fn, *args, **kwargs)


class ModelWorker:
    """Runs blocking calls for one model in its own thread, admitting at most 1 + queue_size.

    `concurrency` > 1 is for a model served elsewhere by that many replicas (Ray Serve): as many
    calls then run at once, each on its own thread waiting for its replica, and
    `concurrency + queue_size` are admitted."""

    def __init__(
        self,
        name: str,
        queue_size: int,
        timeout_s: float | None = None,
        concurrency: int = 1,
        prior_s: float = 1.0,
        typical_units: float = 1.0,
        share: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.name = name
        self.capacity = queue_size + concurrency
        self.timeout_s = timeout_s
        self.typical_units = typical_units  # the size of a call that does not say (`work_units`)
        self.times = ServiceTimes(prior_s)  # its calls' cost per kind and size (`prior_s` at first)
        self.backlog = Backlog(parallel=concurrency * share)
        """The work admitted and not done, each with its cost; `share`: the part of the replicas
        this server counts on (Ray Serve ingress replicas share them)."""
        self.refused: dict[str, int] = {"queue": 0, "wait": 0}
        """Requests refused because the queue was full, or because their expected wait was too long."""
        self._runner = OrderedThreads(name, concurrency)
        # Re-entrant: an unused `Admission` gives its slot back when it is collected, which can
        # happen on any thread, at any allocation, including one made while the lock is held.
        self._lock = threading.RLock()
        self._admitted = 0
        self._running = 0

    @property
    def pending(self) -> int:
        """Calls admitted and not yet finished (running + waiting)."""
        return self._admitted

    def load(self) -> tuple[int, int]:
        """(running, waiting): calls on the model now, and admitted calls (or slots held for
        streams not yet started) waiting for it."""
        with self._lock:
            return self._running, self._admitted - self._running

    def _units(self, units: float | None) -> float:
        return self.typical_units if units is None else units

    def expected_wait(self, ahead: bool = False) -> float:
        """Seconds a call admitted now would wait before it runs (the backlog's expected work;
        `ahead`: a call of work that goes ahead of single-stage requests)."""
        return self.backlog.expected_wait(ahead)

    def check(self, units: float | None = None) -> None:
        """Refuse now (503) if a new request would be refused: for work admitted up front. Full
        queue, or (with the request's route group's budget, `admission.budget`) an expected wait
        plus its own expected work beyond the budget; Retry-After says when it would fit."""
        if self._admitted >= self.capacity:
            self.refused["queue"] += 1
            raise OverloadedError(
                f"the {self.name} model is busy ({self._admitted} requests in progress); retry shortly",
                retry_after_s=max(1, math.ceil(self.expected_wait())),
            )
        try:
            check_alone(self, self._units(work_units.get() if units is None else units))
        except OverloadedError:
            self.refused["wait"] += 1
            raise

    def admit(
        self, reserved: bool = False, units: float | None = None, step_units: float | None = None
    ) -> Admission:
        """Take a slot now (503 if there is none) for work that starts later, of `units` in all
        (else `work_units`, else the typical call's), done in calls of at most `step_units` (else
        one call). `reserved`: never refused, for a stage of work admitted as a whole elsewhere (a
        spoken turn, at its `Gate`), whose place in the order of admission it keeps; otherwise the
        work takes a new place."""
        units = work_units.get() if units is None else units
        self._admit(not reserved, units)
        place = admitted() if reserved else order.get()
        step = None if step_units is None else self.times.estimate(step_units)
        entry = self.backlog.add(self.times.estimate(self._units(units)), goes_ahead(place), step)
        return Admission(self, entry, next_order() if place is None else place, part=reserved)

    def _admit(self, check: bool, units: float | None = None) -> None:
        with self._lock:
            if check:
                self.check(units)
                # A new request: after everything admitted before it (a spoken turn's: ahead).
                order.set(next_order(ahead=turn_request()))
            self._admitted += 1

    def _submit(self, check: bool, fn: Callable[[], T]) -> _Job:
        self._admit(check)
        return self._start(fn)

    def _start(
        self,
        fn: Callable[[], T],
        release: bool = True,
        key: int | None = None,
        kept: bool = False,
        order: int | None = None,
        learn: bool = True,
    ) -> _Job:
        """Run `fn` in a slot already counted; the slot is released when it is done (unless
        `release` is False: a step of an `Admission` that keeps its slot). `key`: its entry in the
        backlog, reserved at admission (else the request's reservation, else one is added now),
        given back when the call is done unless `kept` for the work's later calls. `order`: its
        work's place in the order of admission (else the current request's)."""
        cancel = threading.Event()
        timings = stage_times.get()
        units = self._units(work_units.get())
        place = admitted() if order is None else order
        if key is None and (reservation := take_reservation(self.name)) is not None:
            key, kept = reservation  # a spoken turn's place, taken at its gate
        if key is None:
            key, kept = self.backlog.add(self.times.estimate(units), goes_ahead(place)), False
        entry = key
        kind = budget.get()

        def call() -> T:
            placed = _place.set(place)
            behind = waiting_behind.set(self._runner.first_waiting)
            started = time.perf_counter()
            self.backlog.started(entry)
            with self._lock:
                self._running += 1
            size: float | None = None
            share = 0.0
            try:
                with cancellable(cancel):
                    raise_if_cancelled()
                    result, size, share = run_measured(units, fn, self.backlog)
                return result
            finally:
                with self._lock:
                    self._running -= 1
                _place.reset(placed)
                waiting_behind.reset(behind)
                elapsed = time.perf_counter() - started
                if size is not None:  # a call cut short says nothing of how long one takes
                    self.times.record(size, share, kind.group if kind is not None else "")
                if timings is not None:
                    timings[self.name] = timings.get(self.name, 0.0) + elapsed * 1000

        # The slot is released when the call is done or dropped from the queue, not when the
        # awaiting request goes away: a running call holds the model until it notices `cancel`.
        future = self._runner.submit(place, call)
        if not kept:  # what took its time (a call cut short, or failed) says how fast work goes
            future.add_done_callback(
                lambda f: self.backlog.done(entry, learn and not f.cancelled() and f.exception() is None)
            )
        if release:
            future.add_done_callback(self._release)
        return _Job(cast("Future[object]", future), cancel)

    async def _await(self, job: _Job) -> object:
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                return await asyncio.wrap_future(job.future)
        except TimeoutError:
            if not deadline.expired():
                raise  # the work's own TimeoutError (a socket, say), not the stage's deadline
            job.stop()
            raise StageTimeoutError(self.name, self.timeout_s or 0) from None
        except asyncio.CancelledError:
            job.stop()
            raise

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on this model's thread; 503 when the queue is full, 504 past
        the stage's timeout."""
        return cast(T, await self._await(self._submit(True, lambda: fn(*args, **kwargs))))

    async def follow_up(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a further step of work that was already admitted (the next sentence of a streamed
        reply). Never refused: a stream that has started is not cut off by later arrivals."""
        return cast(T, await self._await(self._submit(False, lambda: fn(*args, **kwargs))))

    def stream(
        self, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]:
        """Iterate `fn(*args, **kwargs)` on this model's thread, yielding its items as they come.

        Admission is as for `run`, when the iteration starts (use `admit().stream(...)` to be
        refused before that, e.g. ahead of a streamed response's 200); the stage's timeout bounds
        the whole iteration. When the consumer stops early (break, cancellation, a client gone),
        the iterator is closed on the worker thread after its current item, so a generator backend
        can stop its inference in its `finally`; the slot is held until then.
        """
        return self._iterate(None, fn, *args, **kwargs)

    async def _iterate(
        self, admission: Admission | None, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]:
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

        if admission is None:
            job = self._submit(True, produce)
        else:
            admission._take()
            job = self._start(
                produce, key=admission._taken_up(), order=admission.order, learn=admission.learn
            )
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        item, error = await items.get()
                except TimeoutError:
                    raise StageTimeoutError(self.name, self.timeout_s or 0) from None
                if item is _END:
                    # The slot is given back when the work's future completes, a moment after its
                    # last item: wait for that, so that a request sent as soon as the stream ends
                    # finds the slot free (the release callback runs before this wakes).
                    await asyncio.wrap_future(job.future)
                    if error is not None:
                        raise error
                    return
                yield cast(T, item)
        finally:
            stop.set()
            job.stop()

    def _release(self, _: object) -> None:
        with self._lock:
            self._admitted -= 1
            idle = self._admitted == 0
        if idle:
            request_trim()  # on a thread of its own, at most once per 10 s

    def shutdown(self) -> None:
        self._runner.shutdown()


@dataclass
class OpenedStream(Generic[E]):
    """Work opened after every check: `events` yields its output; `aclose()` stops it and gives
    the model's slot back if the work never started."""

    events: AsyncGenerator[E, None]
    admission: Admission

    async def aclose(self) -> None:
        await self.events.aclose()
        self.admission.release()
