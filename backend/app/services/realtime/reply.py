"""The reply a realtime session is sending, and the reply begun early (pre-emptively).

`ReplySender` hands one reply's events at a time to the session's `Listener` and keeps what it
has sent of the reply's audio, so that a barge-in knows what the listener heard. `EarlyReply` is
a reply begun during the trailing silence, whose events wait until the turn takes it over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from backend.app.services.realtime.listener import Listener, TimedTranscription
from backend.app.services.speech import ReplyAudio, ReplyText
from backend.app.services.turn_events import Commitment, Heard, TurnEvent, heard_reply


@dataclass
class EarlyReply:
    """A reply begun during the trailing silence, on the transcript so far: its events wait in
    `events` (None ends them, an exception is a failure) until the turn confirms `commitment`."""

    transcription: asyncio.Task[TimedTranscription]
    commitment: Commitment
    events: asyncio.Queue[TurnEvent | BaseException | None]
    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        for task in (self.transcription, self.task):
            if task is not None and not task.done():
                task.cancel()


class ReplySender:
    """Hands one reply at a time to the listener, and keeps what the client has been sent."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._sent: list[ReplyAudio] = []
        self._started = False
        self._audio_started_at: float | None = None
        self._played_at_cut: float | None = None
        self._heard_limit_s: float | None = None
        self.finished_in: asyncio.Task[object] | None = None
        """The task (turn) whose reply was last told finished: from then on it cannot be cut."""

    def reset(self) -> None:
        """A new reply."""
        self._sent, self._started, self._audio_started_at = [], False, None
        self._played_at_cut = self._heard_limit_s = None

    @property
    def sent_s(self) -> float:
        """Seconds of reply audio sent so far."""
        return sum(piece.audio.duration for piece in self._sent)

    def played_s(self) -> float:
        """Seconds of reply audio the client has had time to play (it plays as it receives),
        or what the client said it played (`limit_heard`); frozen at the moment of a cut, so the
        event and the stored reply agree."""
        if self._played_at_cut is not None:
            return self._played_at_cut
        if self._audio_started_at is None:
            return 0.0
        played = min(self.sent_s, time.perf_counter() - self._audio_started_at)
        return played if self._heard_limit_s is None else min(played, self._heard_limit_s)

    def limit_heard(self, seconds: float) -> None:
        """The client says it played no more than `seconds` of this reply (a truncation)."""
        self._heard_limit_s = max(0.0, seconds)

    def cut(self) -> str:
        """A cut: freeze what was heard, and return its text."""
        self._played_at_cut = self.played_s()
        return heard_reply(self._sent, self._played_at_cut).text

    async def start(self) -> None:
        """The reply begins (once per reply, however many events follow)."""
        if not self._started:
            self._started = True
            await self._listener.reply_started()

    async def send(self, event: TurnEvent, transcript: TimedTranscription | None = None) -> None:
        if isinstance(event, Heard):
            if transcript is not None:
                await self._listener.transcribed(*transcript)  # the user's turn is stored
            await self.start()
        elif isinstance(event, ReplyText):
            await self.start()
            await self._listener.reply_text(event.text)
        elif isinstance(event, ReplyAudio):
            await self.start()
            if self._audio_started_at is None:
                self._audio_started_at = time.perf_counter()
            self._sent.append(event)
            await self._listener.reply_audio(event, len(self._sent) == 1)
        else:
            await self.start()
            self.finished_in = asyncio.current_task()
            await self._listener.reply_finished(event)

    async def take_over(self, early: EarlyReply, transcript: TimedTranscription, ended_at: float) -> bool:
        """Send the pre-emptive reply begun during the silence, confirmed as this turn's: what it
        has ready goes out at once, the rest as it comes. False when it failed before anything
        was sent (the turn then answers the usual way)."""
        early.commitment.confirm(ended_at)
        first = await early.events.get()
        if first is None or isinstance(first, BaseException):
            return False
        await self._listener.transcribed(*transcript)  # the user's turn is being stored as confirmed
        event: TurnEvent | BaseException | None = first
        while event is not None:
            if isinstance(event, BaseException):
                raise event
            await self.send(event)
            event = await early.events.get()
        return True
