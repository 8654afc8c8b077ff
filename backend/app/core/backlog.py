"""What admission measures: how long a stage's work takes, and what is already in front of it.

Each model stage keeps `ServiceTimes`: an exponentially weighted mean of the seconds its calls took,
per kind of request (its route group) and size class (the call's size in the stage's own unit:
seconds of audio to transcribe, seconds of speech to synthesise; classes are powers of two). A call's
seconds are its share of the cores (`Share`): each moment it ran divided among the calls running then
on its stage, less the time it waited for its turn on the cores. A new call's cost is read from its
class (scaled to its size), or from the nearest class seen, or from the stage's prior.

`Backlog` keeps the work admitted and not yet done, each with its expected cost: its expected wait
is what the calls ahead still need (a running call's cost less the time it has run), spread over
its parallel slots, and scaled by how much longer admitted work has lately taken than expected
(`Backlog.slowdown`: what the costs leave out, such as the server's own work and other stages
slowing this one). It also knows which route groups were refused lately (`Backlog.fair_wait`).

A spoken turn goes ahead of single-stage work (core/order.py): its expected wait counts only what it
waits for (`Backlog.expected_wait(ahead=True)`), and each kind learns its own slowdown.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from backend.app.core.order import AHEAD_GROUP, AHEAD_S

T = TypeVar("T")

ALPHA = 0.3
"""Weight of the newest call in a class's mean: the estimate follows a changed load within ~5 calls."""


@dataclass
class _Class:
    seconds: float
    units: float


class ServiceTimes:
    """A stage's recent service time per kind of request (its route group: a spoken turn's reply
    is longer than a /chat answer) and size class (thread-safe)."""

    def __init__(self, prior_s: float, alpha: float = ALPHA) -> None:
        self.prior_s = prior_s
        self.alpha = alpha
        self._classes: dict[tuple[str, int], _Class] = {}
        self._lock = threading.Lock()

    @staticmethod
    def size_class(units: float) -> int:
        return max(0, math.floor(math.log2(max(units, 0.0) + 1.0)))

    def record(self, units: float, seconds: float, kind: str | None = None) -> None:
        """A call of `units`, for a request of `kind` (None: the current request's group), took
        `seconds` of the model's work (its share of the cores while it ran: `Share`)."""
        key = (_kind(kind), self.size_class(units))
        units = max(units, 1e-6)
        with self._lock:
            seen = self._classes.get(key)
            if seen is None:
                self._classes[key] = _Class(seconds, units)
            else:
                seen.seconds += self.alpha * (seconds - seen.seconds)
                seen.units += self.alpha * (units - seen.units)

    def estimate(self, units: float, kind: str | None = None) -> float:
        """Seconds a call of `units` for a request of `kind` (None: the current request's group) is
        expected to take: from the nearest size class seen for that kind, else for any kind."""
        kind, size = _kind(kind), self.size_class(units)
        with self._lock:
            if not self._classes:
                return self.prior_s
            same = [key for key in self._classes if key[0] == kind] or list(self._classes)
            nearest = min(same, key=lambda k: (abs(k[1] - size), -k[1]))
            seen = self._classes[nearest]
        scale = max(units, 1e-6) / seen.units
        if nearest[1] == size:
            scale = min(2.0, max(0.5, scale))  # within a class, size moves the cost a little
        return seen.seconds * scale


def _kind(kind: str | None) -> str:
    if kind is not None:
        return kind
    limit = budget.get()
    return limit.group if limit is not None else ""


SLOWDOWN_ALPHA = 0.3
"""Weight of the newest done work in `Backlog.slowdown`'s sums."""

MAX_SLOWDOWN = 10.0

SLOWDOWN_FADES_S = 10.0
"""After this long without news (no work of its kind admitted), `Backlog.slowdown` fades back to
1, with this time constant: a kind of work refused for being late is not refused for ever on old
figures."""

FAIR_S = 2.0
"""A group refused within this many seconds still wants in (`Backlog.fair_wait`)."""

OVERRUN = 0.1
"""A call that has run past its estimate is still expected to need this share of it."""


@dataclass
class _Entry:
    cost: float
    added: float
    due: float
    """Seconds from `added` it was expected to be done in: the work ahead of it, and its own."""
    ahead: bool = False
    """Work that goes ahead of single-stage requests (`next_order(ahead=True)`)."""
    step: float = math.inf
    """The cost of its longest call, for work done in several (the sentences of a text)."""
    started: float | None = None

    def left(self, now: float) -> float:
        if self.started is None:
            return self.cost
        return max(self.cost - (now - self.started), OVERRUN * self.cost)

    def before(self, now: float, ahead: bool) -> float:
        """What of it a call admitted now would wait for: all of it, unless the call goes ahead
        (`ahead`) of this work (a single-stage request's, admitted in the last `AHEAD_S`), which
        it then waits for only as long as one of its calls may still run."""
        if not ahead or self.ahead or now - self.added > AHEAD_S:
            return self.left(now)
        if self.started is None:
            return 0.0
        return min(self.left(now), self.step)


@dataclass
class Backlog:
    """The work admitted on a stage and not yet done, with the expected cost of each call."""

    parallel: float = 1.0
    _entries: dict[int, _Entry] = field(default_factory=dict)
    _next: int = 0
    _took: dict[bool, float] = field(default_factory=lambda: {False: 0.0, True: 0.0})
    _due: dict[bool, float] = field(default_factory=lambda: {False: 0.0, True: 0.0})
    """Decayed sums of how long admitted work took, and how long it was expected to (`slowdown`),
    for single-stage work (False) and for work that goes ahead (True)."""
    _learnt: dict[bool, float] = field(default_factory=lambda: {False: 0.0, True: 0.0})
    """When each kind last learnt from work done, or last had nothing admitted (whichever is
    later): its silence counts from then."""
    _running: int = 0
    _clock: float = 0.0
    """Seconds of work done, each running call counted for its share: 1/n while n ran at once."""
    _last: float = 0.0
    _wanted: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per route group refused lately: (the most slack of its refused requests, when last refused)."""
    _taken: dict[str, float] = field(default_factory=dict)  # per group, when it was last admitted
    _lock: threading.RLock = field(default_factory=threading.RLock)
    """Re-entrant: an unused admission gives its place back when it is collected, which can happen
    on any thread, at any allocation, including one made while the lock is held."""

    def add(self, cost: float, ahead: bool = False, step: float | None = None) -> int:
        """Admitted work expected to cost `cost` s (at the machine's speed alone); its key.
        `ahead`: work that goes ahead of single-stage requests; `step`: the cost of its longest
        call, for work done in several calls (default: one call)."""
        now = time.monotonic()
        with self._lock:
            self._next += 1
            due = self._left(now, ahead) + cost
            self._entries[self._next] = _Entry(cost, now, due, ahead, cost if step is None else step)
            return self._next

    def reached(self, key: int) -> None:
        """The work of `key`, admitted earlier as part of a whole (a spoken turn's reply), reaches
        this stage now: its pace is learnt from here, against the wait it finds and its cost."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.started is None:
                entry.added = now
                entry.due = self._left(now, entry.ahead, without=key) + entry.cost

    def started(self, key: int) -> None:
        """The entry's work has begun (its first call, for an entry held across several)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.started is None:
                entry.started = time.monotonic()

    def done(self, key: int, learn: bool = True) -> None:
        """The work of `key` is done; `learn`: how long it took says how fast work goes (not for
        a place given back unused, or one held while the request waited for other stages)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None and learn and entry.started is not None:
                lane = entry.ahead
                self._took[lane] = self._due[lane] * self.slowdown(lane)  # as faded so far
                self._took[lane] += SLOWDOWN_ALPHA * ((now - entry.added) - self._took[lane])
                self._due[lane] += SLOWDOWN_ALPHA * (entry.due - self._due[lane])
                self._learnt[lane] = now
            if entry is not None and not self._admitted(entry.ahead):
                self._learnt[entry.ahead] = max(self._learnt[entry.ahead], now)

    def _admitted(self, ahead: bool) -> bool:
        """Whether work of the kind is admitted and not done (held lock)."""
        return any(e.ahead == ahead for e in self._entries.values())

    def slowdown(self, ahead: bool = False) -> float:
        """How much longer admitted work has lately taken than expected, from admission to done
        (1: as expected), for single-stage work or for work that goes ahead (`ahead`). The costs
        are learnt call by call; what they leave out (the server's own work answering requests,
        other processes on the machine, calls that slow each other more than their shares say,
        and for single-stage work, the spoken turns that went ahead of it) shows here, and scales
        every estimate made on this backlog for that kind of work. It fades back to 1 when no
        such work has been admitted for a while (`SLOWDOWN_FADES_S`): work under way, however
        slow, is news to come."""
        with self._lock:
            if self._due[ahead] <= 0.0:
                return 1.0
            ratio = min(MAX_SLOWDOWN, max(1.0 / MAX_SLOWDOWN, self._took[ahead] / self._due[ahead]))
            if self._admitted(ahead):
                return ratio
            silent = time.monotonic() - self._learnt[ahead] - SLOWDOWN_FADES_S
            fade = math.exp(-max(0.0, silent) / SLOWDOWN_FADES_S)
            return math.pow(ratio, fade)

    def _left(self, now: float, ahead: bool = False, without: int | None = None) -> float:
        """The work a call admitted now would wait for, in seconds of one slot (held lock). A call
        that goes ahead (`ahead`) also counts one call of the queued single-stage work it goes
        ahead of: a stage it reaches later (a turn's reply, after its transcription) may have
        begun one by then."""
        entries = [e for key, e in self._entries.items() if key != without]
        left = sum(e.before(now, ahead) for e in entries)
        if ahead:
            left += max((min(e.cost, e.step) for e in entries if e.before(now, ahead) == 0.0), default=0.0)
        return left / self.parallel

    def expected_wait(self, ahead: bool = False) -> float:
        """Seconds a call admitted now would wait before it runs (`ahead`: a call that goes ahead
        of single-stage requests)."""
        now = time.monotonic()
        with self._lock:
            left = self._left(now, ahead)
        return left * self.slowdown(ahead)

    def _advance(self) -> None:
        """Move the clock on: each of n running calls has had 1/n of the time since, or all of it
        while they are no more than the parallel slots (replicas) (held lock)."""
        now = time.monotonic()
        if self._running:  # calls beyond the parallel slots (replicas) share them
            self._clock += (now - self._last) / max(1.0, self._running / self.parallel)
        self._last = now

    def join(self) -> float:
        """A call starts (or resumes) running on a stage of this backlog; the shared clock now."""
        with self._lock:
            self._advance()
            self._running += 1
            return self._clock

    def leave(self) -> float:
        """A call stops (or pauses) running; the shared clock now."""
        with self._lock:
            self._advance()
            self._running -= 1
            return self._clock

    def wanted(self, group: str, slack: float) -> None:
        """A request of `group` was refused; with its budget, it could have waited `slack` s."""
        now = time.monotonic()
        with self._lock:
            seen = self._wanted.get(group)
            if seen is None or now - seen[1] > FAIR_S or slack > seen[0]:
                self._wanted[group] = (slack, now)
            else:
                self._wanted[group] = (seen[0], now)

    def took(self, group: str) -> None:
        """A request of `group` was admitted."""
        with self._lock:
            self._taken[group] = time.monotonic()

    def fair_wait(self, group: str) -> float:
        """The most work ahead that leaves room for every group refused in the last `FAIR_S`: the
        least slack (budget less its own work) of the most admissible request each of them sent.
        Without it, clients that never back off keep the backlog as full as the group with most
        room allows, and the others (a spoken turn's budget holds three stages of work) never get
        in; with it, every group that wants in is admitted behind the same wait, first come. Spoken
        turns hold no one back: they go ahead of the single-stage work admitted before them
        (core/order.py), so they are held back themselves instead (`admission.fits`)."""
        now = time.monotonic()
        with self._lock:
            slacks = [
                max(0.0, slack)
                for other, (slack, when) in self._wanted.items()
                if other != group
                and other != AHEAD_GROUP  # turns go ahead: nothing admitted after them waits
                and now - when <= FAIR_S
                and self._taken.get(other, -math.inf) < when  # not admitted since
            ]
        return min(slacks, default=math.inf)


@dataclass(frozen=True)
class Budget:
    """How long a request of a route group may expect to take on a stage (its wait and its own
    work), from ADMISSION_BUDGETS; None: only the queue's length bounds it."""

    group: str
    seconds: float | None


budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("admission_budget", default=None)
"""Set by the request middleware from the route's group; read when a stage admits work."""

work_units: contextvars.ContextVar[float | None] = contextvars.ContextVar("work_units", default=None)
"""The size of the call about to be admitted, in its stage's unit (set around the call; None: the
stage's typical call)."""

_measured: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("measured", default=None)


class Share:
    """One call's share of its stage: the time it ran, each moment divided among the calls running
    then on the stage beyond its parallel slots, less the time it waited for its turn on the cores
    (`off_cores`). Calls that overlap slow each other; their shares add up to the time the work
    took, as the backlog counts it."""

    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog
        self._start = backlog.join()
        self._paused_at: float | None = None
        self._excluded = 0.0

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self.backlog.leave()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._excluded += self.backlog.join() - self._paused_at
            self._paused_at = None

    def end(self) -> float:
        """The call is done: its share, in seconds."""
        self.resume()
        return self.backlog.leave() - self._start - self._excluded


_current = threading.local()


@contextmanager
def off_cores() -> Iterator[None]:
    """The current call (on a worker thread) waits for a turn on the cores during the block: that
    time is not its own work."""
    share: Share | None = getattr(_current, "share", None)
    if share is None:
        yield
        return
    share.pause()
    try:
        yield
    finally:
        share.resume()


def measured_units(units: float | None) -> None:
    """Called on the worker thread by a call that learns its size only as it runs (an upload's
    audio seconds, once decoded): its service time is recorded for that size (None: not at all,
    for a call whose time says nothing of the model's speed, until a size is said). Sizes said
    one after another add up (the segments of one piece)."""
    holder = _measured.get()
    if holder is None:
        return
    if units is None:
        holder[:] = [None, False]
    elif holder[1] and holder[0] is not None:
        holder[0] += units
    else:
        holder[:] = [units, True]


def run_measured(units: float, fn: Callable[[], T], backlog: Backlog) -> tuple[T, float | None, float]:
    """`fn()` (on the worker thread), the size it said it was (`measured_units`, else `units`),
    and its share of the cores (`Share`) in seconds."""
    holder: list[Any] = [units, False]  # the size, and whether the call said one
    token = _measured.set(holder)
    share = _current.share = Share(backlog)
    try:
        result = fn()
    finally:
        _current.share = None
        _measured.reset(token)
        seconds = share.end()
    return result, holder[0], seconds
