"""The CPU's cores, taken in turns by the engines that spread one call over all of them.

llama.cpp, ONNX Runtime (Piper, Moonshine) and CTranslate2 (Whisper) each run one call on every
core. Two such calls at once do not share the cores, they fight for them: llama.cpp's threads meet
at a barrier after every operation, so one of them waiting for a core stalls the others. Measured
on two cores, 64 tokens of the small LLM: 0.7 s alone, 28-92 s while Moonshine transcribed beside
it without a break, 17-36 s beside Piper (the default Qwen: 5.8 s alone, 80-140 s beside Piper).

So they take turns (`CpuTurns.turn`), one at a time, each for one short unit of work (a Whisper
window, a Moonshine piece, a Piper sentence), in the order their requests were admitted
(core/admission.py: first admitted, first served; units of the same request, or of none, in the
order they ask). The LLM's generation is not cut: stopping and resuming it costs a token's step
each time (measured: it lost a tenth of the turns a minute of two clients). Instead, while it
generates, an engine's unit first waits until the LLM has had the cores to itself for `slice_s`
since the last unit ended: a long synthesis or transcription beside a generation then alternates
with it instead of starving it. A unit of work admitted after the generation leaves it
`LATER_ROOM` times that: work admitted later slows work admitted before it (whose admission did not
count on it) little, and still goes on beside a long generation rather than wait for its end.

A spoken turn's work goes ahead of single-stage work (core/order.py), here too: its units come
first, and a unit of single-stage work leaves a turn's reply the larger room, unless it holds the
thread a turn's call waits for (then it goes at the turn's pace: `urgency`). A one-thread engine
(the default voice, hibari) shares the cores with a generation, its short calls beside the LLM cost
it little (bench/concurrency.py), except for single-stage work beside a spoken turn's reply: that
takes a turn, leaving the reply `GIVING_WAY_ROOM` slices (`giving_way`).
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

from backend.app.core.backlog import off_cores
from backend.app.core.cancellation import WorkCancelled, cancel_event
from backend.app.core.order import goes_ahead, next_order, order, urgency, waiting_behind

T = TypeVar("T")
_END = object()
LATER_ROOM = 4.0
"""How many slices of room a unit leaves a generation admitted before its own work."""
GIVING_WAY_ROOM = 2.0
"""How many slices of room a one-thread engine's unit of single-stage work leaves a spoken turn's
reply (`giving_way`): less than `LATER_ROOM`, as it takes one core of the two, not both."""
_POLL_S = 0.05
"""How often a waiting call looks whether its request has gone."""


def _nobody() -> int | None:
    return None


class CpuTurns:
    """Turns on the cores for the engines in the order of admission, with room left for the LLM."""

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self._changed = threading.Condition()
        self._queue: list[tuple[int, int]] = []
        """Units waiting, as (their work's place in the order of admission, their arrival)."""
        self._arrivals = itertools.count()
        self._held = False
        self._generating: list[tuple[int, Callable[[], int]]] = []
        """The generations under way: their places in the order of admission, and what says the
        place of the work they hold up (`urgency`)."""
        self._room_since = 0.0
        """Since when the generating LLM has had the cores to itself."""

    @contextmanager
    def turn(self, cancelled: threading.Event | None = None, giving_way: bool = False) -> Iterator[None]:
        """Hold the cores for the block (an engine's unit of work), after every waiting unit of
        work admitted before its own, and after the generating LLM's room (`giving_way`: a
        one-thread engine's unit, see `giving_way`). A unit whose request
        goes away while it waits (`cancelled`, else the worker's flag) leaves the line
        (`WorkCancelled`)."""
        place = order.get()
        me = (next_order() if place is None else place, next(self._arrivals))
        cancelled = cancelled or cancel_event()
        with off_cores(), self._changed:
            bisect.insort(self._queue, me)
            try:
                while (wait := self._wait_s(me, giving_way)) > 0:
                    if cancelled is not None and cancelled.is_set():
                        raise WorkCancelled
                    self._changed.wait(min(wait, _POLL_S))
            except BaseException:
                self._queue.remove(me)
                self._changed.notify_all()
                raise
            self._queue.remove(me)
            self._held = True
        try:
            yield
        finally:
            with self._changed:
                self._held = False
                self._room_since = time.monotonic()
                self._changed.notify_all()

    def _wait_s(self, me: tuple[int, int], giving_way: bool) -> float:
        """How long `me` must still wait (0: its turn now). Called holding the condition."""
        if self._held or self._queue[0] != me:
            return _POLL_S
        if not self._generating:
            return 0.0
        urgent = urgency(me[0])
        if giving_way and goes_ahead(urgent):
            return 0.0  # a one-thread unit that now holds up a spoken turn's call: it goes at once
        later = self._first_generating() < urgent
        room = self.slice_s * ((GIVING_WAY_ROOM if giving_way else LATER_ROOM) if later else 1.0)
        return max(0.0, self._room_since + room - time.monotonic())

    def _first_generating(self) -> int:
        """The earliest place in the order of admission a generation under way works for (held
        condition; some generation is under way)."""
        return min(urgent() for _, urgent in self._generating)

    @contextmanager
    def generating(self) -> Iterator[None]:
        """The LLM generates during the block: the engines' units leave it room (more, for units
        of work admitted after it)."""
        place = order.get()
        place = next_order() if place is None else place
        behind = waiting_behind.get() or _nobody

        def urgent() -> int:  # read from other threads: the generation's own stage
            first = behind()
            return place if first is None else min(place, first)

        mine = (place, urgent)
        with self._changed:
            if not self._generating:
                self._room_since = time.monotonic()
            self._generating.append(mine)
        try:
            yield
        finally:
            with self._changed:
                self._generating.remove(mine)
                self._changed.notify_all()

    @contextmanager
    def giving_way(self) -> Iterator[None]:
        """A unit of a one-thread engine (hibari), which shares the cores with a generation, except
        for single-stage work while a spoken turn's reply is generated (work that goes ahead,
        core/order.py): that takes a turn, and so leaves the reply its room, unless it comes to
        hold up a spoken turn's own call (`urgency`), which then goes at once."""
        place = order.get()
        with self._changed:
            behind = (
                (place is None or not goes_ahead(urgency(place)))
                and bool(self._generating)
                and goes_ahead(self._first_generating())
            )
        with self.turn(giving_way=True) if behind else nullcontext():
            yield

    def waiting(self) -> int:
        """Units waiting for the cores now."""
        return len(self._queue)


def taking_turn(turns: CpuTurns | None) -> AbstractContextManager[None]:
    """A turn on the cores, or nothing when the engine does not share them."""
    return turns.turn() if turns is not None else nullcontext()


def generating(turns: CpuTurns | None) -> AbstractContextManager[None]:
    """The LLM's generation, which the engines leave room for (nothing when not sharing)."""
    return turns.generating() if turns is not None else nullcontext()


def giving_way(turns: CpuTurns | None) -> AbstractContextManager[None]:
    """A one-thread engine's unit, which gives way to a spoken turn's reply (nothing when not sharing)."""
    return turns.giving_way() if turns is not None else nullcontext()


def in_turns(items: Iterable[T], turns: CpuTurns | None) -> Iterator[T]:
    """`items`, each computed in a turn of its own (a Whisper window, a sentence)."""
    iterator = iter(items)
    while True:
        with taking_turn(turns):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item  # type: ignore[misc]
