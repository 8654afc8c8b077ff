"""What a realtime session reports, and to whom: the `Listener` one wire protocol implements
(api/protocols/: our WebSocket, OpenAI's Realtime) to put a session's happenings into its own
messages. A new transport is one more Listener."""

from __future__ import annotations

from typing import Literal, Protocol

from backend.app.audio.types import Audio
from backend.app.core.errors import AppError
from backend.app.core.values import Transcription
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn

TimedTranscription = tuple[Transcription, float]
"""A transcription and the milliseconds it took."""

CutReason = Literal["turn_detected", "client_cancelled"]
"""Why a reply stopped early: the user spoke over it, or the client asked."""


class Listener(Protocol):
    """What a session reports, in order, for one protocol to put into words."""

    async def speech_started(self, at_s: float) -> None:
        """The VAD heard speech start, `at_s` seconds into the session's input."""

    async def speech_stopped(self, utterance: Audio, at_s: float, committed: bool) -> None:
        """The user's turn ended (the VAD's silence, or a commit when `committed`); `utterance`
        is what will be transcribed."""

    async def partial_transcript(self, text: str) -> None:
        """The utterance so far, transcribed while the user is still speaking."""

    async def transcribed(self, transcription: Transcription, stt_ms: float) -> None:
        """The user's words (stored once this is called, unless empty)."""

    async def transcription_failed(self, error: AppError) -> None:
        """A committed utterance could not be transcribed (e.g. the STT queue is full)."""

    async def user_text(self, text: str) -> None:
        """A typed user message is stored."""

    async def reply_started(self) -> None:
        """A reply begins (before any of its text or audio)."""

    async def reply_text(self, delta: str) -> None:
        """The reply's text as it is generated."""

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        """One synthesised piece of the reply (`first` of this reply)."""

    async def reply_finished(self, turn: Turn) -> None:
        """The reply is complete and stored (an empty transcript: `turn.reply` is empty and
        `reply_started` was never called). `turn.interrupted`: the turn was cut before its reply
        began (its words are stored and told), so it has none, and `reply_started` never came."""

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        """The reply stopped early; `said` is what the listener heard, which is what is stored."""

    async def reply_failed(self, error: AppError) -> None:
        """The reply could not be made (a busy model, an over-long text); the session goes on."""
