"""Admission by expected wait: how long a stage's work takes, and what is already in front of it.

Each model stage keeps `ServiceTimes`: an exponentially weighted mean of the seconds its calls took,
per size class (the call's size in the stage's own unit: seconds of audio to transcribe, tokens to
generate, seconds of speech to synthesise; classes are powers of two). A new call's cost is read
from its class (scaled to its size), or from the nearest class seen, or from the stage's prior.

`Backlog` keeps the work admitted on a stage and not yet done, each with its expected cost: its
expected wait is what the calls ahead still need (a running call's cost less the time it has run),
spread over the stage's parallel slots. A request is admitted when its expected wait plus its own
cost fits its route group's budget (ADMISSION_BUDGETS); otherwise it is refused at once with 503
and a Retry-After of when it would fit. Work that belongs to a request admitted as a whole (the
stages of a spoken turn, the next sentence of a streamed reply) is never refused, but counts.
"""

from __future__ import annotations

import contextvars
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from backend.app.core.errors import OverloadedError

T = TypeVar("T")

TYPICAL_TURN_S = 3.0
"""Seconds of speech a spoken turn is taken to have when its length is not known yet."""

ALPHA = 0.3
"""Weight of the newest call in a class's mean: the estimate follows a changed load within ~5 calls."""


@dataclass
class _Class:
    seconds: float
    units: float


class ServiceTimes:
    """A stage's recent service time per size class (thread-safe)."""

    def __init__(self, prior_s: float, alpha: float = ALPHA) -> None:
        self.prior_s = prior_s
        self.alpha = alpha
        self._classes: dict[int, _Class] = {}
        self._lock = threading.Lock()

    @staticmethod
    def size_class(units: float) -> int:
        return max(0, math.floor(math.log2(max(units, 0.0) + 1.0)))

    def record(self, units: float, seconds: float) -> None:
        """A call of `units` took `seconds` (its time on the model, not its wait)."""
        key = self.size_class(units)
        with self._lock:
            seen = self._classes.get(key)
            if seen is None:
                self._classes[key] = _Class(seconds, max(units, 1e-6))
            else:
                seen.seconds += self.alpha * (seconds - seen.seconds)
                seen.units += self.alpha * (max(units, 1e-6) - seen.units)

    def estimate(self, units: float) -> float:
        """Seconds a call of `units` is expected to take."""
        key = self.size_class(units)
        with self._lock:
            if not self._classes:
                return self.prior_s
            nearest = min(self._classes, key=lambda k: (abs(k - key), -k))
            seen = self._classes[nearest]
        scale = max(units, 1e-6) / seen.units
        if nearest == key:
            scale = min(2.0, max(0.5, scale))  # within a class, size moves the cost a little
        return seen.seconds * scale


@dataclass
class _Entry:
    cost: float
    started: float | None = None


@dataclass
class Backlog:
    """The work admitted on a stage and not yet done, with the expected cost of each call."""

    parallel: int = 1
    _entries: dict[int, _Entry] = field(default_factory=dict)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, cost: float) -> int:
        with self._lock:
            self._next += 1
            self._entries[self._next] = _Entry(cost)
            return self._next

    def started(self, key: int) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.started = time.monotonic()

    def done(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def expected_wait(self) -> float:
        """Seconds a call admitted now would wait before it runs."""
        now = time.monotonic()
        with self._lock:
            left = sum(
                max(0.0, e.cost - (now - e.started)) if e.started is not None else e.cost
                for e in self._entries.values()
            )
        return left / max(1, self.parallel)


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

_measured: contextvars.ContextVar[list[float | None] | None] = contextvars.ContextVar(
    "measured", default=None
)


def measured_units(units: float | None) -> None:
    """Called on the worker thread by a call that learns its size only as it runs (an upload's
    audio seconds, once decoded): its service time is recorded for that size (None: not at all,
    for a call whose time says nothing of the model's speed)."""
    holder = _measured.get()
    if holder is not None:
        holder[0] = units


def run_measured(units: float, fn: Callable[[], T]) -> tuple[T, float | None]:
    """`fn()` (on the worker thread), and the size it said it was (`measured_units`), else `units`."""
    holder: list[float | None] = [units]
    token = _measured.set(holder)
    try:
        return fn(), holder[0]
    finally:
        _measured.reset(token)


ROUTE_GROUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/conversation(/calls(/.*)?)?|/ws/conversation|/v1/realtime(/.*)?|/phone/.+"), "turn"),
    (re.compile(r"/stt|/v1/audio/(transcriptions|translations)|/api/asr/.+"), "stt"),
    (re.compile(r"/chat|/optimize|/v1/chat/completions|/api/.+"), "chat"),
    (re.compile(r"/tts|/v1/audio/speech|/dev/captioned_speech"), "tts"),
)
"""Which budget of ADMISSION_BUDGETS a request's path takes (the first pattern that matches)."""


def route_group(path: str) -> str | None:
    return next((group for pattern, group in ROUTE_GROUPS if pattern.fullmatch(path)), None)


class Staged(Protocol):
    """What admission reads of a stage (`ModelWorker`)."""

    name: str
    times: ServiceTimes
    backlog: Backlog

    def expected_wait(self) -> float: ...


def check_whole(stages: Sequence[tuple[Staged, float]], what: str) -> None:
    """Admit work that needs several stages as a whole (a spoken turn: STT, LLM, TTS), each with
    its size: refused (503) when some stage has work ahead of it and the waits plus the work
    would pass the request's budget. Work that finds every stage idle is always taken."""
    limit = budget.get()
    if limit is None or not limit.seconds:
        return
    waits = [stage.expected_wait() for stage, _ in stages]
    if max(waits, default=0.0) <= 0.0:
        return
    wait = sum(waits)
    cost = sum(stage.times.estimate(units) for stage, units in stages)
    if wait + cost > limit.seconds:
        busiest = max(zip(waits, (stage.name for stage, _ in stages), strict=True))[1]
        raise OverloadedError(
            f"a {what} would wait about {wait:.1f} s (most of it for the {busiest} model) and take "
            f"{wait + cost:.1f} s of the {limit.seconds:g} s it may (ADMISSION_BUDGETS); retry later",
            retry_after_s=retry_after(wait, cost, limit.seconds),
        )


reservations: contextvars.ContextVar[dict[str, tuple[Backlog, int]] | None] = contextvars.ContextVar(
    "reservations", default=None
)
"""The backlog places a request admitted as a whole holds on its stages, by stage name (`Gate.enter`)."""


def take_reservation(stage: str) -> int | None:
    """The place the current request holds in `stage`'s backlog, for its first call there (once)."""
    held = reservations.get()
    if not held or stage not in held:
        return None
    return held.pop(stage)[1]


def retry_after(wait_s: float, cost_s: float, limit_s: float) -> int:
    """Whole seconds until a call costing `cost_s` behind `wait_s` of work would fit `limit_s`."""
    return max(1, math.ceil(wait_s + cost_s - limit_s))


class Gate:
    """Counts requests of one kind in flight (spoken turns, say) and refuses more than `capacity`
    at once with `OverloadedError` (503 + Retry-After). Not tied to a thread: a request that passes
    the gate may then reserve its stages' slots in order (`ModelWorker.admit(reserved=True)`)."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.refused = 0
        """Requests refused for their expected wait (`check_whole`), counted by their caller."""
        self._lock = threading.RLock()  # re-entrant for the same reason as ModelWorker's
        self._inside = 0

    @property
    def inside(self) -> int:
        return self._inside

    def enter(self, stages: Sequence[tuple[Staged, float]] = (), reserve: Sequence[str] = ()) -> Ticket:
        """A place, if one is free and the `stages` the work needs (each with its size) admit it
        as a whole within the request's budget (`check_whole`); else 503. The stages named in
        `reserve` get the work's place in their backlog now (`reservations`), so that work
        admitted after it counts it before it runs."""
        with self._lock:
            if self._inside >= self.capacity:
                raise OverloadedError(
                    f"{self._inside} {self.name} are in progress, the most this server takes at once; "
                    "retry shortly",
                    retry_after_s=2,
                )
            try:
                check_whole(stages, self.name.rstrip("s"))
            except OverloadedError:
                self.refused += 1
                raise
            self._inside += 1
        held = {
            stage.name: (stage.backlog, stage.backlog.add(stage.times.estimate(units)))
            for stage, units in stages
            if stage.name in reserve
        }
        reservations.set(held)
        return Ticket(self, held)

    def _leave(self) -> None:
        with self._lock:
            self._inside -= 1


class Ticket:
    """A place taken at a `Gate`, given back by `release()` (idempotent) or when dropped."""

    def __init__(self, gate: Gate, held: dict[str, tuple[Backlog, int]] | None = None) -> None:
        self._gate: Gate | None = gate
        self._held = held or {}

    def release(self) -> None:
        gate, self._gate = self._gate, None
        while self._held:  # places in the backlogs the work never took up
            backlog, key = self._held.popitem()[1]
            backlog.done(key)
        if gate is not None:
            gate._leave()

    def __del__(self) -> None:
        self.release()
