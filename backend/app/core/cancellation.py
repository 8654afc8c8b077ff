"""Work that stops when its request goes away.

A model worker runs each call with a flag that is set when the awaiting request has gone (its
client disconnected, or the stage ran past its timeout). Backends call `raise_if_cancelled()`
between units of work (a Whisper window, a generated token, a synthesised sentence), so a call
stops within one unit; a helper thread of a call reads the flag through `cancel_event()`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_cancel_event: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "cancel_event", default=None
)


class WorkCancelled(Exception):
    """Raised on a worker thread when the request that admitted the work has gone."""


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Run the block as work that `event` asks to stop (on the worker thread)."""
    token = _cancel_event.set(event)
    try:
        yield
    finally:
        _cancel_event.reset(token)


def cancel_event() -> threading.Event | None:
    """The current work's cancellation flag (None outside a worker call), for helper threads."""
    return _cancel_event.get()


def raise_if_cancelled() -> None:
    """Backends call this between units of work; it raises `WorkCancelled` once asked to stop."""
    event = _cancel_event.get()
    if event is not None and event.is_set():
        raise WorkCancelled
