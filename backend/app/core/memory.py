"""Giving freed heap memory back to the system, on glibc (Linux); a no-op elsewhere.

A long-running server that decodes audio and runs models on several threads fragments glibc's heap:
each thread that allocates gets an arena of its own, and pages freed in the middle of an arena stay
counted in the resident size until something hands them back. Measured over an hour of mixed
traffic, that held about 190 MB more than after the warm-up, of which a `malloc_trim` given by hand
returned 150 MB. So the server caps the arenas at start-up (unless MALLOC_ARENA_MAX is set) and
trims the heap when a model worker falls idle, at most once per `TRIM_INTERVAL_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENA_MAX = 2
TRIM_INTERVAL_S = 10.0


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None
    return libc


_libc = _load_libc()


def limit_arenas() -> None:
    """Cap glibc's malloc arenas at `ARENA_MAX`, before the worker threads start; an operator's own
    MALLOC_ARENA_MAX (which glibc reads itself) wins."""
    if _libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _libc.mallopt(M_ARENA_MAX, ARENA_MAX)


def trim_heap() -> None:
    """Return free heap pages to the system now (blocking; a few milliseconds on a 2 GB heap)."""
    if _libc is not None:
        _libc.malloc_trim(0)


class _Trimmer:
    """A daemon thread that trims the heap when asked, at most once per `TRIM_INTERVAL_S`, so that
    neither the event loop nor a model worker waits for it."""

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        if _libc is None:
            return
        self._wanted.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            trim_heap()
            time.sleep(TRIM_INTERVAL_S)


_trimmer = _Trimmer()


def request_trim() -> None:
    """Ask for a heap trim soon (a model worker fell idle); returns at once."""
    _trimmer.request()
