"""Admission by expected wait: the rule each request meets before any work is done for it.

A request is admitted when its expected wait on the stages it needs plus its own expected work fits
its route group's budget (ADMISSION_BUDGETS), and leaves the groups refused lately their fair share
(core/backlog.py measures both); otherwise it is refused at once with 503 and a Retry-After of when
it would fit. A stage that is idle takes any request. A spoken turn is admitted or refused as a
whole, on its three stages (`Gate`). Work that belongs to a request admitted as a whole (the stages
of a spoken turn, the next sentence of a streamed reply) is never refused, but counts. A request
that would be refused whatever its size is refused before its body is read (`refuse_early`).
"""

from __future__ import annotations

import contextvars
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from backend.app.core.backlog import Backlog, Budget, ServiceTimes, budget
from backend.app.core.errors import OverloadedError
from backend.app.core.order import AHEAD_GROUP, next_order, order

TYPICAL_TURN_S = 3.0
"""Seconds of speech a spoken turn is taken to have when its length is not known yet."""

TYPICAL_REPLY_S = 4.0
"""Seconds of speech a spoken reply is taken to have (its TTS work, counted from its admission)."""

SPOKEN_CHARS_PER_S = 14.0
"""About how many characters of English text a second of speech says (for a text's TTS cost)."""

ROUTE_GROUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/conversation(/calls(/.*)?)?|/ws/conversation|/v1/realtime(/.*)?|/phone/.+"), "turn"),
    (re.compile(r"/stt|/v1/audio/(transcriptions|translations)|/api/asr/.+"), "stt"),
    (re.compile(r"/chat|/optimize|/v1/chat/completions|/api/.+"), "chat"),
    (re.compile(r"/tts|/v1/audio/speech|/dev/captioned_speech"), "tts"),
)
"""Which budget of ADMISSION_BUDGETS a request's path takes (the first pattern that matches)."""


def route_group(path: str) -> str | None:
    return next((group for pattern, group in ROUTE_GROUPS if pattern.fullmatch(path)), None)


def turn_request() -> bool:
    """Whether the current request is a spoken turn's (its route group is `turn`), whose work goes
    ahead of single-stage work (core/order.py): admitted whole at a `Gate`, or stage by stage (a
    realtime session's or a call's transcription of speech as it comes)."""
    limit = budget.get()
    return limit is not None and limit.group == AHEAD_GROUP


class Staged(Protocol):
    """What admission reads of a stage (`ModelWorker`)."""

    name: str
    times: ServiceTimes
    backlog: Backlog
    typical_units: float

    def expected_wait(self, ahead: bool = False) -> float: ...


def check_alone(stage: Staged, units: float) -> None:
    """Admit a call of `units` on one stage: refused (503) when the stage has work ahead of it and
    that wait plus the call's own work would pass the request's budget (`fits`). An idle stage
    takes any call, however long its own work (unless it is kept for a group refused lately)."""
    limit = budget.get()
    if limit is None or not limit.seconds:
        return
    ahead = turn_request()
    wait = stage.expected_wait(ahead)
    cost = stage.times.estimate(units) * stage.backlog.slowdown(ahead)
    threshold = fits([(stage.backlog, wait)], cost, limit)
    if threshold is not None:
        raise OverloadedError(
            f"the {stage.name} model has about {wait:.1f} s of work ahead of this request, which "
            f"would take {cost:.1f} s itself: {_passes(wait, cost, threshold, limit)}; retry later",
            retry_after_s=retry_after(wait, cost, threshold + cost),
        )


def check_whole(stages: Sequence[tuple[Staged, float]], what: str) -> None:
    """Admit work that needs several stages as a whole (a spoken turn: STT, LLM, TTS), each with
    its size: refused (503) when some stage has work ahead of it and the waits plus the work
    would pass the request's budget (`fits`). Such work goes ahead of single-stage requests
    (core/order.py): it waits only for the like of it admitted before, and for calls already
    running or about to (`Backlog.expected_wait(ahead=True)`). Work that finds every stage idle is
    taken (unless they are kept for a group refused lately)."""
    limit = budget.get()
    if limit is None or not limit.seconds or not stages:
        return
    waits = [(stage.backlog, stage.expected_wait(ahead=True)) for stage, _ in stages]
    wait = sum(w for _, w in waits)
    cost = sum(stage.times.estimate(units) * stage.backlog.slowdown(ahead=True) for stage, units in stages)
    backlogs = [stage.expected_wait() for stage, _ in stages]
    threshold = fits(waits, cost, limit, backlogs)
    if threshold is None:
        return
    if wait + cost <= limit.seconds:  # held back for the groups refused lately, by the backlogs
        held = sum(backlogs)
        busiest = max(zip(backlogs, (stage.name for stage, _ in stages), strict=True))[1]
        raise OverloadedError(
            f"a {what} goes ahead of the {held:.1f} s of work admitted on its models (most of it for "
            f"the {busiest} model), and requests refused lately with less room in their budgets go "
            f"first (at most {threshold:.1f} s of work ahead); retry later",
            retry_after_s=retry_after(held, cost, threshold + cost),
        )
    busiest = max(zip((w for _, w in waits), (stage.name for stage, _ in stages), strict=True))[1]
    raise OverloadedError(
        f"a {what} would wait about {wait:.1f} s (most of it for the {busiest} model) and take "
        f"{cost:.1f} s itself: {_passes(wait, cost, threshold, limit)}; retry later",
        retry_after_s=retry_after(wait, cost, threshold + cost),
    )


def refuse_early(stages: Sequence[Staged], whole: bool = False) -> OverloadedError | None:
    """The refusal a request of the current budget's group would meet whatever its size, known
    before its body is read: the work ahead of it on `stages` (`whole`: work admitted as a whole,
    which goes ahead of single-stage requests) already passes its budget, or some stage's share
    for the groups refused lately (`Backlog.fair_wait`). A request let through is checked again
    with its own size by the stages themselves."""
    limit = budget.get()
    if limit is None or not limit.seconds or not stages:
        return None
    waits = [(stage.backlog, stage.expected_wait(ahead=whole)) for stage in stages]
    wait = sum(w for _, w in waits)
    fair = [backlog.fair_wait(limit.group) for backlog, _ in waits]
    if wait <= limit.seconds and all(w <= f for (_, w), f in zip(waits, fair, strict=True)):
        return None
    typical = sum(
        stage.times.estimate(stage.typical_units) * stage.backlog.slowdown(ahead=whole) for stage in stages
    )
    for backlog, _ in waits:  # the group still wants in, with a request of the usual size
        backlog.wanted(limit.group, (limit.seconds - typical) / len(waits))
    threshold = min(limit.seconds, sum(min(f, limit.seconds) for f in fair))
    return OverloadedError(
        f"about {wait:.1f} s of work is ahead of this request, more than a {limit.group} request may "
        f"wait ({threshold:.1f} s: ADMISSION_BUDGETS); retry later",
        retry_after_s=max(1, math.ceil(wait - threshold)),
    )


def fits(
    waits: Sequence[tuple[Backlog, float]],
    cost: float,
    limit: Budget,
    backlogs: Sequence[float] | None = None,
) -> float | None:
    """None when the `waits` on the request's stages plus its `cost` fit the budget and leave the
    groups refused lately their fair share on each stage (`Backlog.fair_wait`: every group that
    wants in is admitted behind the same wait, first come, and idle stages go to the one that
    needs most room); else the most wait this request could have been admitted behind, and the
    refusal is noted (its group wants in, with its room split over its stages). Work that goes
    ahead (a spoken turn) waits for less than the others on its stages, but adds to their wait:
    its share is held to each stage's whole backlog (`backlogs`, as a single-stage request would
    wait), so that the groups refused lately get in too."""
    slack = (limit.seconds or 0.0) - cost
    wait = sum(w for _, w in waits)
    fair = [backlog.fair_wait(limit.group) for backlog, _ in waits]
    share = slack / len(waits)
    # Idle stages take any request, however long its own work, unless a group refused lately
    # needs less room than this request would leave it (it gets the idle stages first).
    held = [w for _, w in waits] if backlogs is None else backlogs
    idle = wait <= 0.0 and sum(held) <= 0.0 and all(f >= share for f in fair)
    if idle or (wait < slack and all(h <= f for h, f in zip(held, fair, strict=True))):
        for backlog, _ in waits:
            backlog.took(limit.group)
        return None
    for backlog, _ in waits:
        backlog.wanted(limit.group, share)
    return min(slack, sum(min(f, max(slack, 0.0)) for f in fair))


def _passes(wait: float, cost: float, threshold: float, limit: Budget) -> str:
    if wait + cost > (limit.seconds or 0.0):
        return f"{wait + cost:.1f} s in all, over the {limit.seconds:g} s a {limit.group} request may take"
    return (
        f"requests refused lately with less room in their budgets go first (at most {threshold:.1f} s "
        "of work ahead)"
    )


@dataclass
class _Reserved:
    """A place a request admitted as a whole holds in a stage's backlog (`Gate.enter`)."""

    backlog: Backlog
    key: int
    kept: bool
    """Kept for every call of the request on the stage (given back with its ticket), rather
    than taken up by its first call."""


reservations: contextvars.ContextVar[dict[str, _Reserved] | None] = contextvars.ContextVar(
    "reservations", default=None
)
"""The backlog places a request admitted as a whole holds on its stages, by stage name."""


def take_reservation(stage: str) -> tuple[int, bool] | None:
    """The place the current request holds in `stage`'s backlog, and whether its calls there share
    it (kept) or its first call takes it up (then it is no longer held)."""
    held = reservations.get()
    if not held or stage not in held:
        return None
    if held[stage].kept:
        return held[stage].key, True
    return held.pop(stage).key, False


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

    def enter(
        self,
        stages: Sequence[tuple[Staged, float]] = (),
        reserve: Sequence[str] = (),
        keep: Sequence[str] = (),
    ) -> Ticket:
        """A place, if one is free and the `stages` the work needs (each with its size) admit it
        as a whole within the request's budget (`check_whole`); else 503. The stages named in
        `reserve` (taken up by the work's first call there) and `keep` (shared by all its calls
        there, until the ticket is given back) get the work's place in their backlog now
        (`reservations`), so that work admitted after it counts it before it runs. The work
        takes a new place in the order of admission (`order`), ahead of single-stage requests."""
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
            stage.name: _Reserved(
                stage.backlog,
                stage.backlog.add(stage.times.estimate(units), ahead=True),
                stage.name in keep,
            )
            for stage, units in stages
            if stage.name in reserve or stage.name in keep
        }
        reservations.set(held)
        order.set(next_order(ahead=True))
        return Ticket(self, held)

    def _leave(self) -> None:
        with self._lock:
            self._inside -= 1


class Ticket:
    """A place taken at a `Gate`, given back by `release()` (idempotent) or when dropped."""

    def __init__(self, gate: Gate, held: dict[str, _Reserved] | None = None) -> None:
        self._gate: Gate | None = gate
        self._held = held or {}

    def release(self) -> None:
        gate, self._gate = self._gate, None
        while self._held:  # places in the backlogs kept, or never taken up
            reserved = self._held.popitem()[1]
            reserved.backlog.done(reserved.key, learn=False)
        if gate is not None:
            gate._leave()

    def __del__(self) -> None:
        self.release()
