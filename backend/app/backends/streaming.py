"""A generation that runs on a helper thread and is read as an iterator on the caller's thread."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def beside(
    generate: Callable[[], None], deltas: Iterable[T], stop: threading.Event, failures: list[BaseException]
) -> Iterator[T]:
    """Yield `deltas` while `generate` runs on a thread of its own and feeds them. The iterator
    waits for that thread, so the model's worker stays busy exactly as long as the model is;
    closing it sets `stop`, which the generation checks at every token. The first failure that
    `generate` recorded in `failures` is raised once the deltas end."""
    # In the caller's context: the generation keeps its place in the order of admission (core/cpu.py).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(generate,), name="llm-generate", daemon=True)
    thread.start()
    try:
        yield from deltas
    finally:
        stop.set()
        # An abandoned stream may be finalised by the garbage collector on any thread, even
        # the generation thread itself: it stops at the next token without being waited for.
        if thread is not threading.current_thread():
            thread.join()
    if failures:
        raise failures[0]
