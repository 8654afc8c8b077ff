"""What a realtime session sends back of a reply, and the reply begun early (pre-emptively).

`ReplySender` writes a turn's events to the client and keeps what it has sent of the reply's
audio, so that a barge-in knows what the listener heard. `EarlyReply` is a reply begun during the
trailing silence, whose events wait until the turn takes it over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from backend.app.audio.encode import to_pcm16
from backend.app.core.values import Transcription
from backend.app.services.conversation import Commitment, Heard, TurnEvent, heard_pieces
from backend.app.services.speech import ReplyAudio, ReplyText
from backend.app.text.segment import join_pieces

TimedTranscription = tuple[Transcription, float]
"""A transcription and the milliseconds it took."""

AUDIO_FRAME_S = 0.2
"""Reply audio goes out in binary messages of this much PCM16."""


@dataclass
class Outbox:
    """How the session talks back: JSON events and binary audio (the route serialises them)."""

    event: Callable[[dict[str, Any]], Awaitable[None]]
    audio: Callable[[bytes], Awaitable[None]]


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
    """Sends one turn at a time to the client, and keeps what the listener has been sent."""

    def __init__(self, outbox: Outbox) -> None:
        self._out = outbox
        self._sent: list[ReplyAudio] = []
        self._audio_started_at: float | None = None
        self._played_at_cut: float | None = None

    def reset(self) -> None:
        """A new turn."""
        self._sent, self._audio_started_at, self._played_at_cut = [], None, None

    def played_s(self) -> float:
        """Seconds of reply audio the client has had time to play (it plays as it receives);
        frozen at the moment of a barge-in, so the event and the stored reply agree."""
        if self._played_at_cut is not None:
            return self._played_at_cut
        if self._audio_started_at is None:
            return 0.0
        sent = sum(piece.audio.duration for piece in self._sent)
        return min(sent, time.perf_counter() - self._audio_started_at)

    def cut(self) -> str:
        """A barge-in: freeze what was heard, and return its text."""
        self._played_at_cut = self.played_s()
        return join_pieces([piece.text for piece in heard_pieces(self._sent, self._played_at_cut)])

    async def send(self, event: TurnEvent, transcript: dict[str, Any]) -> None:
        if isinstance(event, Heard):
            await self._out.event(transcript)  # sent once the user's turn is stored
        elif isinstance(event, ReplyText):
            await self._out.event({"type": "reply_delta", "text": event.text})
        elif isinstance(event, ReplyAudio):
            await self._send_audio(event)
        else:
            await self._out.event(
                {
                    "type": "turn_end",
                    "reply": event.reply,
                    "audio_url": f"/outputs/{event.audio_name}" if event.audio_name else None,
                    "timings": event.timings,
                }
            )

    async def take_over(self, early: EarlyReply, transcript: dict[str, Any], ended_at: float) -> bool:
        """Send the pre-emptive reply begun during the silence, confirmed as this turn's: what it
        has ready goes out at once, the rest as it comes. False when it failed before anything
        was sent (the turn then answers the usual way)."""
        early.commitment.confirm(ended_at)
        first = await early.events.get()
        if first is None or isinstance(first, BaseException):
            return False
        await self._out.event(transcript)  # the user's turn is being stored as confirmed
        event: TurnEvent | BaseException | None = first
        while event is not None:
            if isinstance(event, BaseException):
                raise event
            await self.send(event, transcript)
            event = await early.events.get()
        return True

    async def _send_audio(self, piece: ReplyAudio) -> None:
        if self._audio_started_at is None:
            await self._out.event({"type": "audio_start", "sample_rate": piece.audio.sample_rate})
            self._audio_started_at = time.perf_counter()
        self._sent.append(piece)
        pcm = to_pcm16(piece.audio)
        step = int(piece.audio.sample_rate * AUDIO_FRAME_S) * 2
        for offset in range(0, len(pcm), step):
            await self._out.audio(pcm[offset : offset + step])
