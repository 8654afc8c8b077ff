"""Our own realtime protocol (/ws/conversation, docs/realtime.md): the client's messages (`start`,
`interrupt`, `stop`, binary PCM16 audio), and what a session reports put into our events (JSON)
and binary PCM16 frames."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from backend.app.api.protocols.dispatch import Dispatch
from backend.app.api.protocols.errors import ProtocolError
from backend.app.api.word_timings import Timeline
from backend.app.audio.encode import to_pcm16
from backend.app.audio.types import Audio
from backend.app.audio.vad import SAMPLE_RATE
from backend.app.core.config import RealtimeSettings, VADSettings
from backend.app.core.errors import AppError, InvalidInputError
from backend.app.core.json_guard import check_json_bytes
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.history import check_conversation_id
from backend.app.services.realtime.config import ReplyOptions, SessionConfig
from backend.app.services.realtime.listener import CutReason
from backend.app.services.realtime.session import RealtimeSession
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn

INPUT_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

AUDIO_FRAME_S = 0.2
"""Reply audio goes out in binary messages of this much PCM16."""


@dataclass
class Outbox:
    """How the protocol talks back: JSON events and binary audio (the route sends them)."""

    event: Callable[[dict[str, Any]], Awaitable[None]]
    audio: Callable[[bytes], Awaitable[None]]


MESSAGES: Dispatch[OwnProtocol, dict[str, Any]] = Dispatch()
"""The client's JSON messages by `type`."""


def parse(text: str) -> dict[str, Any]:
    """A text message: a JSON object with a string `type` (ProtocolError otherwise)."""
    try:
        message = check_json_bytes(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"a text message must be a JSON object ({e.msg})") from e
    except InvalidInputError as e:
        raise ProtocolError(f"a text message must be valid JSON text: {e.message}") from e
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('a text message must be a JSON object with a "type"')
    return message


class OwnProtocol:
    """A session's events in our protocol; also the input side (its messages, binary frames)."""

    def __init__(self, outbox: Outbox, settings: RealtimeSettings, vad: VADSettings) -> None:
        self._out = outbox
        self.settings = settings
        self.vad = vad
        self.session: RealtimeSession | None = None
        self._resampler: soxr.ResampleStream | None = None
        self.started = False
        self._timeline = Timeline()
        """Where the reply's pieces and words fall in its audio."""
        self.ended = False
        """The client said `stop`, and was told `session_end`: the connection closes."""

    # --- the client's messages --------------------------------------------------------------------

    async def text(self, text: str) -> None:
        """A text message, to its handler; an unknown type breaks the protocol."""
        message = parse(text)
        handler = MESSAGES.find(message["type"])
        if handler is None:
            known = ", ".join(MESSAGES.kinds)
            raise ProtocolError(f"unknown message type {message['type']!r} ({known})")
        await handler(self, message)

    @MESSAGES.on("start")
    async def start(self, message: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        if self.started:
            raise ProtocolError("the session has already started")
        rate = message.get("sample_rate", SAMPLE_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in INPUT_RATES:
            rates = ", ".join(map(str, INPUT_RATES))
            raise ProtocolError(f"sample_rate must be one of {rates} (PCM16 mono)", "invalid_sample_rate")
        try:
            cid = message.get("conversation_id")
            if cid is not None and not isinstance(cid, str):
                raise ProtocolError("conversation_id must be a string")
            conversation_id = check_conversation_id(cid or None)
            voice = message.get("voice")
            if voice is not None and not isinstance(voice, str):
                raise ProtocolError("voice must be a string")
            language = message.get("language")
            if language is not None and not isinstance(language, str):
                raise ProtocolError("language must be a string")
            turns = message.get("turn_detection", self.vad.turn_detection)
            if turns not in ("semantic", "silence"):
                wrong = 'turn_detection must be "semantic" or "silence"'
                raise ProtocolError(wrong, "invalid_turn_detection")
            session.configure(
                SessionConfig(
                    vad=self.vad.model_copy(update={"turn_detection": turns}),
                    options=TranscribeOptions(
                        language=language or None, beam_size=self.settings.stt_beam_size
                    ),
                    reply=ReplyOptions(voice=voice or None),
                    partials_every_s=self.settings.partial_transcript_s,
                )
            )
        except AppError as e:
            raise ProtocolError(e.message, e.code) from e
        session.conversation_id = conversation_id
        if rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        self.started = True
        await self._out.event(
            {
                "type": "ready",
                "conversation_id": conversation_id,
                "sample_rate": rate,
                "output_sample_rate": session.output_sample_rate,
            }
        )

    async def audio(self, data: bytes) -> None:
        if not self.started or self.session is None:
            raise ProtocolError('send {"type": "start"} before audio')
        if len(data) % 2:
            raise ProtocolError("audio frames are PCM16: an even number of bytes", "invalid_audio")
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        await self.session.feed(samples)

    @MESSAGES.on("interrupt")
    async def interrupt(self, message: dict[str, Any]) -> None:
        """The client asks the reply under way to stop (a button, not speech)."""
        if not self.started or self.session is None:
            raise ProtocolError('send {"type": "start"} first')
        await self.session.cancel()

    @MESSAGES.on("stop")
    async def stop(self, message: dict[str, Any]) -> None:
        """The end of input: the turn under way finishes, then `session_end`."""
        assert self.session is not None
        await self.session.stop()
        await self._out.event({"type": "session_end"})
        self.ended = True

    # --- the session's events ---------------------------------------------------------------------

    async def speech_started(self, at_s: float) -> None:
        await self._out.event({"type": "speech_start"})

    async def speech_stopped(self, utterance: Audio, at_s: float, committed: bool) -> None:
        await self._out.event({"type": "speech_end", "duration": round(utterance.duration, 3)})

    async def partial_transcript(self, text: str) -> None:
        await self._out.event({"type": "transcript_delta", "text": text})

    async def transcribed(self, transcription: Transcription, stt_ms: float) -> None:
        await self._out.event(
            {"type": "transcript", "text": transcription.text, "language": transcription.language}
        )

    async def transcription_failed(self, error: AppError) -> None:
        await self._error(error)

    async def user_text(self, text: str) -> None:
        pass  # our protocol has no typed messages

    async def reply_started(self) -> None:
        pass  # `audio_start` comes with the first audio

    async def reply_text(self, delta: str) -> None:
        await self._out.event({"type": "reply_delta", "text": delta})

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        if first:
            self._timeline = Timeline()
            await self._out.event({"type": "audio_start", "sample_rate": piece.audio.sample_rate})
        start, words = self._timeline.place(piece.audio)
        duration = round(piece.audio.duration, 3)
        event = {"type": "audio_words", "index": piece.index, "start": start, "duration": duration}
        await self._out.event({**event, "words": words})
        pcm = to_pcm16(piece.audio)
        step = int(piece.audio.sample_rate * AUDIO_FRAME_S) * 2
        for offset in range(0, len(pcm), step):
            await self._out.audio(pcm[offset : offset + step])

    async def reply_finished(self, turn: Turn) -> None:
        if turn.interrupted:  # cut before its reply began: the user's words are kept, unanswered
            await self._out.event({"type": "interrupted", "said": turn.reply})
            return
        await self._out.event(
            {
                "type": "turn_end",
                "reply": turn.reply,
                "audio_url": f"/outputs/{turn.audio_name}" if turn.audio_name else None,
                "timings": turn.timings,
                "tools": list(turn.tools),
            }
        )

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        await self._out.event({"type": "interrupted", "said": said})

    async def reply_failed(self, error: AppError) -> None:
        await self._error(error)

    async def _error(self, error: AppError) -> None:
        await self._out.event({"type": "error", "code": error.code, "message": error.message})
