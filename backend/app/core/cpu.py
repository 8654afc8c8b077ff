"""The CPU's cores, taken in turns by the engines that spread one call over all of them.

llama.cpp, ONNX Runtime (Piper, Moonshine) and CTranslate2 (Whisper) each run one call on every
core. Two such calls at once do not share the cores, they fight for them: llama.cpp's threads meet
at a barrier after every operation, so one of them waiting for a core stalls the others. Measured
on two cores, 64 tokens of the small LLM: 0.7 s alone, 28-92 s while Moonshine transcribed beside
it without a break, 17-36 s beside Piper (the default Qwen: 5.8 s alone, 80-140 s beside Piper).

So they take turns (`CpuTurns.turn`), one at a time, first come first served, each for one short
unit of work (a Whisper window, a Moonshine piece, a Piper sentence). The LLM's generation is not
cut: stopping and resuming it costs a token's step each time (measured: it lost a tenth of the
turns a minute of two clients). Instead, while it generates, an engine's unit first waits until the
LLM has had the cores to itself for `slice_s` since the last unit ended: a long synthesis or
transcription beside a generation then alternates with it instead of starving it. A one-thread
engine (the default voice, hibari) does not take turns: its short calls beside the LLM cost it
little (bench/concurrency.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

from backend.app.core.worker import WorkCancelled, cancel_event

T = TypeVar("T")
_END = object()
_POLL_S = 0.05
"""How often a waiting call looks whether its request has gone."""


class CpuTurns:
    """First come, first served turns on the cores for the engines, with room left for the LLM."""

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False
        self._generating = 0
        self._room_since = 0.0
        """Since when the generating LLM has had the cores to itself."""

    @contextmanager
    def turn(self, cancelled: threading.Event | None = None) -> Iterator[None]:
        """Hold the cores for the block (an engine's unit of work), after every unit that asked
        before, and after the generating LLM's room. A unit whose request goes away while it
        waits (`cancelled`, else the worker's flag) leaves the line (`WorkCancelled`)."""
        me = object()
        cancelled = cancelled or cancel_event()
        with self._changed:
            self._queue.append(me)
            try:
                while (wait := self._wait_s(me)) > 0:
                    if cancelled is not None and cancelled.is_set():
                        raise WorkCancelled
                    self._changed.wait(min(wait, _POLL_S))
            except BaseException:
                self._queue.remove(me)
                self._changed.notify_all()
                raise
            self._queue.popleft()
            self._held = True
        try:
            yield
        finally:
            with self._changed:
                self._held = False
                self._room_since = time.monotonic()
                self._changed.notify_all()

    def _wait_s(self, me: object) -> float:
        """How long `me` must still wait (0: its turn now). Called holding the condition."""
        if self._held or self._queue[0] is not me:
            return _POLL_S
        if not self._generating:
            return 0.0
        return max(0.0, self._room_since + self.slice_s - time.monotonic())

    @contextmanager
    def generating(self) -> Iterator[None]:
        """The LLM generates during the block: the engines' units leave it room."""
        with self._changed:
            if not self._generating:
                self._room_since = time.monotonic()
            self._generating += 1
        try:
            yield
        finally:
            with self._changed:
                self._generating -= 1
                self._changed.notify_all()

    def waiting(self) -> int:
        """Units waiting for the cores now."""
        return len(self._queue)


def taking_turn(turns: CpuTurns | None) -> AbstractContextManager[None]:
    """A turn on the cores, or nothing when the engine does not share them."""
    return turns.turn() if turns is not None else nullcontext()


def generating(turns: CpuTurns | None) -> AbstractContextManager[None]:
    """The LLM's generation, which the engines leave room for (nothing when not sharing)."""
    return turns.generating() if turns is not None else nullcontext()


def in_turns(items: Iterable[T], turns: CpuTurns | None) -> Iterator[T]:
    """`items`, each computed in a turn of its own (a Whisper window, a sentence)."""
    iterator = iter(items)
    while True:
        with taking_turn(turns):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item  # type: ignore[misc]
