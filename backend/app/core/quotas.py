"""What each API key has used, against its quotas: the `KeyLedger`, owned by the app.

- Requests a minute: a sliding window, the times of the key's last admitted requests (HTTP
  requests and WebSocket handshakes alike); one more is refused while that many fall in the last
  60 s, with the seconds until the oldest leaves the window.
- Realtime sessions: counted up when a session is admitted, down when it ends, however it ends.
- Audio seconds a day: what the key's requests transcribed plus what they synthesised, summed per
  UTC day. The amount a request will use is not known until it has run, so a request is refused
  once the day's total is at or over the quota, and the one that crosses it is served whole.

The services add audio to the current request's key through `charge_audio`: the key's account is
in a context variable (`current_account`) that the auth middleware sets for the request, and that
the tasks a request starts inherit (a streamed response, a realtime session's turns).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from backend.app.core.keys import ApiKey

WINDOW_S = 60.0
DAY_S = 86_400

NO_KEY = "<none>"
"""The `key` label of requests that named no configured key (never what the client sent)."""

OUTCOMES = ("ok", "unauthorized", "forbidden", "rate_limited", "too_many_sessions", "audio_quota_exceeded")
"""The `outcome` label: admitted, or the error code the request was refused with."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, the error code, a message naming the limit, and
    (429) the seconds to wait."""

    status: int
    code: str
    message: str
    retry_after_s: int | None = None


@dataclass(frozen=True)
class KeyFigures:
    """One key's usage, as /metrics reports it."""

    name: str
    outcomes: dict[str, int]
    audio_seconds: dict[str, float]
    sessions: int
    audio_seconds_today: float


class Account:
    """One key's usage. Thread-safe: audio may be added from any thread."""

    def __init__(self, key: ApiKey, monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
        self.key = key
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._day = -1
        self._today = 0.0
        self.sessions = 0
        self.audio_seconds: dict[str, float] = {"stt": 0.0, "tts": 0.0}
        self.outcomes: Counter[str] = Counter()

    def admit(self, *, audio: bool, session: bool) -> Refusal | None:
        """Admit one request (counted in the minute's window) or say why not. `audio`: the route
        transcribes or synthesises, and is refused once the day's audio quota is used; `session`:
        a realtime session, which takes one of the key's sessions until `end_session`."""
        quotas = self.key.quotas
        with self._lock:
            now = self._monotonic()
            window = self._requests
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            limit = quotas.requests_per_minute
            if limit is not None and len(window) >= limit:
                wait = max(1, math.ceil(window[0] + WINDOW_S - now))
                return self._refused(
                    "rate_limited",
                    f"key {self.key.name!r} is over its requests_per_minute quota of {limit}; "
                    f"retry in {wait} s",
                    wait,
                )
            if audio and quotas.audio_seconds_per_day is not None:
                wall = self._wall()
                if self._today_at(wall) >= quotas.audio_seconds_per_day:
                    wait = max(1, math.ceil(DAY_S - wall % DAY_S))
                    return self._refused(
                        "audio_quota_exceeded",
                        f"key {self.key.name!r} is over its audio_seconds_per_day quota of "
                        f"{quotas.audio_seconds_per_day:g} s (audio transcribed plus synthesised, "
                        f"per UTC day); retry in {wait} s, after midnight UTC",
                        wait,
                    )
            full = self._sessions_full() if session else None
            if full is not None:
                return full
            window.append(now)
            if session:
                self.sessions += 1
            self.outcomes["ok"] += 1
        return None

    def open_session(self) -> Refusal | None:
        """Take one of the key's realtime sessions for a request already admitted (a WebRTC call
        made by an HTTP request), or say why not; `end_session` gives it back."""
        with self._lock:
            full = self._sessions_full()
            if full is None:
                self.sessions += 1
        return full

    def _sessions_full(self) -> Refusal | None:
        """The refusal of one more session when the key has all of its own open (under the lock)."""
        sessions = self.key.quotas.realtime_sessions
        if sessions is None or self.sessions < sessions:
            return None
        return self._refused(
            "too_many_sessions",
            f"key {self.key.name!r} is over its realtime_sessions quota of {sessions} "
            "(sessions open at once); end one and retry",
            None,
        )

    def end_session(self) -> None:
        with self._lock:
            self.sessions -= 1

    def refuse(self, code: str) -> None:
        """Count a refusal decided elsewhere (a missing scope)."""
        with self._lock:
            self.outcomes[code] += 1

    def add_audio(self, stage: str, seconds: float) -> None:
        """`seconds` of audio transcribed (`stt`) or synthesised (`tts`) for this key."""
        if seconds <= 0:
            return
        with self._lock:
            self.audio_seconds[stage] = self.audio_seconds.get(stage, 0.0) + seconds
            self._today = self._today_at(self._wall()) + seconds

    def figures(self) -> KeyFigures:
        with self._lock:
            return KeyFigures(
                self.key.name,
                dict(self.outcomes),
                dict(self.audio_seconds),
                self.sessions,
                self._today_at(self._wall()),
            )

    def _today_at(self, wall: float) -> float:
        """The day's audio so far (called with the lock held); a new UTC day starts from zero."""
        day = int(wall // DAY_S)
        if day != self._day:
            self._day, self._today = day, 0.0
        return self._today

    def _refused(self, code: str, message: str, wait: int | None) -> Refusal:
        self.outcomes[code] += 1
        return Refusal(429, code, message, wait)


class KeyLedger:
    """Every key's `Account`, and the count of requests that named no key. The clocks are
    injectable for tests: `monotonic` for the minute's window, `wall` (Unix time) for the UTC day."""

    def __init__(
        self,
        keys: list[ApiKey] | tuple[ApiKey, ...],
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = {key.name: Account(key, monotonic, wall) for key in keys}
        self._unauthorized = 0
        self._lock = threading.Lock()

    def account(self, key: ApiKey) -> Account:
        return self.accounts[key.name]

    def unauthorized(self) -> None:
        with self._lock:
            self._unauthorized += 1

    def figures(self) -> tuple[list[KeyFigures], int]:
        """Each key's figures, and the requests refused for want of a valid key."""
        with self._lock:
            refused = self._unauthorized
        return [account.figures() for account in self.accounts.values()], refused


current_account: contextvars.ContextVar[Account | None] = contextvars.ContextVar(
    "current_account", default=None
)
"""The account of the key the current request came with (set by the auth middleware)."""


def charge_audio(stage: str, seconds: float) -> None:
    """Add audio transcribed (`stt`) or synthesised (`tts`) to the current request's key, if any
    (none without keys, or for work that came by Wyoming)."""
    account = current_account.get()
    if account is not None:
        account.add_audio(stage, seconds)
