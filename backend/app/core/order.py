"""The order of admission: the place each request's work takes on the stages' queues and in the
turns on the cores (core/ordered.py, core/cpu.py).

Each request takes a place when it is admitted, and its calls carry it, so that work admitted later
does not go ahead of work admitted earlier, which its estimate counted on. Work admitted as a whole
on several stages (a spoken turn) is the exception: it goes ahead of the single-stage requests
admitted in the `AHEAD_S` before it (`next_order(ahead=True)`), whose wait counts it. A person
waiting for a spoken answer is the one whose wait shows; a turn needs three stages in a row, and
queued behind every stage's backlog it could not be admitted at all while clients that never back
off keep those backlogs full. A call of single-stage work that holds the thread a turn's call waits
for goes at the turn's pace until it is done (`urgency`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

AHEAD_GROUP = "turn"
"""The route group whose work goes ahead: spoken turns (core/admission.py's ROUTE_GROUPS)."""

AHEAD_S = 5.0
"""Work admitted as a whole (a spoken turn) goes ahead of single-stage work admitted up to this many
seconds before it (`next_order`), not of older work: a single-stage request is overtaken only by the
turns admitted in its first seconds of waiting, so its wait stays bounded."""

_last_order = [-1, 0]
"""The last place given, per kind: single-stage work (0), work that goes ahead (1)."""
_orders_lock = threading.Lock()

order: contextvars.ContextVar[int | None] = contextvars.ContextVar("admission_order", default=None)
"""The current request's place in the order of admission (set when it is admitted; on a worker
thread, the running call's)."""


def next_order(ahead: bool = False) -> int:
    """A new place in the order of admission, after every place given so far: twice the
    monotonic clock in microseconds, plus one for single-stage work. For work that goes ahead
    (`ahead`: a spoken turn), the clock is read `AHEAD_S` earlier: after every place given so far
    to such work, and before the single-stage work admitted in the last `AHEAD_S`. Places of work
    that goes ahead are even, the others odd (`goes_ahead`)."""
    now = time.monotonic_ns() // 1000 - (round(AHEAD_S * 1e6) if ahead else 0)
    with _orders_lock:
        place = max(2 * now + (0 if ahead else 1), _last_order[ahead] + 2)
        _last_order[ahead] = place
    return place


def goes_ahead(place: int | None) -> bool:
    """Whether work in this place of the order of admission goes ahead of single-stage requests."""
    return place is not None and place % 2 == 0


waiting_behind: contextvars.ContextVar[Callable[[], int | None] | None] = contextvars.ContextVar(
    "waiting_behind", default=None
)
"""On a worker thread: the place in the order of admission of the first call waiting for the
stage's threads (None: none waits)."""


def urgency(place: int) -> int:
    """The place in the order of admission a running call in `place` works for: its own, or that
    of the first call waiting for its stage's threads when that comes before it. A call of
    single-stage work that holds the thread a spoken turn's call waits for goes at the turn's pace,
    not its own, until it is done (priority inheritance)."""
    behind = waiting_behind.get()
    first = behind() if behind is not None else None
    return place if first is None else min(place, first)


def admitted() -> int:
    """The current request's place in the order of admission, taken now if it has none."""
    current = order.get()
    if current is None:
        current = next_order()
        order.set(current)
    return current
