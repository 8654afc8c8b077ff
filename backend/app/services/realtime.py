"""A realtime voice session: PCM in, VAD turn-taking, streamed replies out, barge-in.

The transport (the WebSocket route) hands messages in and sends what `Outbox` is given; everything
about turns lives here. The protocol is documented in docs/realtime.md.

One turn at a time: when the VAD ends an utterance, a turn task transcribes it (or takes the
transcript already made during the trailing silence), then streams the reply's text and audio.
Speech that starts while a turn is under way cancels it — the LLM stops generating and no further
TTS is done — and the reply is stored as far as the listener heard it.

Pre-emptive replies (WS_PREEMPTIVE_REPLIES): the trailing silence that may end the turn is used.
At its first silent window the utterance so far is transcribed and, on that transcript, a reply is
begun at once: the LLM generates and its first piece is synthesised, held back from the client.
If the silence lasts and the turn ends, the turn takes that reply over (sent at once, stored once);
if the user goes on speaking, it is cancelled and leaves nothing stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import numpy as np
import soxr

from backend.app.audio.types import Audio
from backend.app.audio.vad import SAMPLE_RATE, SileroVAD, VADEvent, VoiceActivityDetector
from backend.app.core.config import RealtimeSettings, VADSettings
from backend.app.core.errors import AppError, OverloadedError
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.chat import elapsed_ms
from backend.app.services.conversation import Commitment, ConversationService, TurnEvent
from backend.app.services.history import check_conversation_id
from backend.app.services.realtime_reply import EarlyReply, Outbox, ReplySender, TimedTranscription

logger = logging.getLogger(__name__)


INPUT_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class ProtocolError(Exception):
    """The client broke the protocol: the session ends with an error event and this close code."""

    def __init__(self, message: str, code: str = "protocol_error", close_code: int = 1008) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.close_code = close_code


class RealtimeSession:
    """One client's session. Call `start`, then `audio` per binary frame; `stop` ends the input
    (the turn under way finishes); `close` is the end, however it came (cancels what is running)."""

    def __init__(
        self,
        conversation: ConversationService,
        vad: SileroVAD,
        settings: RealtimeSettings,
        outbox: Outbox,
        vad_settings: VADSettings | None = None,
    ) -> None:
        self.conversation = conversation
        self.settings = settings
        self.vad_settings = vad_settings or VADSettings()
        self._vad_model = vad
        self._out = outbox
        self._reply = ReplySender(outbox)
        self._detector: VoiceActivityDetector | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._input_rate = SAMPLE_RATE
        self.conversation_id = ""
        self._voice: str | None = None
        self._options = TranscribeOptions()
        self._turn: asyncio.Task[None] | None = None
        self._speculative: asyncio.Task[TimedTranscription] | None = None
        self._early: EarlyReply | None = None

    @property
    def started(self) -> bool:
        return self._detector is not None

    @property
    def busy(self) -> bool:
        """A turn is being answered."""
        return self._turn is not None and not self._turn.done()

    # --- messages from the client -----------------------------------------------------------------

    async def start(self, message: dict[str, Any]) -> None:
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
            self.conversation_id = check_conversation_id(cid or None)
            voice = message.get("voice")
            if voice is not None and not isinstance(voice, str):
                raise ProtocolError("voice must be a string")
            self._voice = voice or None
            if self._voice:
                self.conversation.tts.choose_voice(self._voice, None)
            language = message.get("language")
            if language is not None and not isinstance(language, str):
                raise ProtocolError("language must be a string")
            self._options = TranscribeOptions(
                language=language or None, beam_size=self.settings.stt_beam_size
            )
            self.conversation.stt.check_options(self._options)
        except AppError as e:
            raise ProtocolError(e.message, e.code) from e
        self._input_rate = rate
        if rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        self._detector = VoiceActivityDetector(self._vad_model.stream(), self.vad_settings)
        await self._out.event(
            {
                "type": "ready",
                "conversation_id": self.conversation_id,
                "sample_rate": rate,
                "output_sample_rate": self.conversation.tts.backend.sample_rate,
            }
        )

    async def audio(self, data: bytes) -> None:
        if self._detector is None:
            raise ProtocolError('send {"type": "start"} before audio')
        if len(data) % 2:
            raise ProtocolError("audio frames are PCM16: an even number of bytes", "invalid_audio")
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        detector = self._detector
        for event in await asyncio.to_thread(detector.feed, samples):
            await self._on_vad(event)

    async def interrupt(self) -> None:
        """The client asks the reply under way to stop (a button, not speech)."""
        if self._detector is None:
            raise ProtocolError('send {"type": "start"} first')
        await self._barge_in()

    async def stop(self) -> None:
        """End of input: an utterance in progress is answered, and the turn under way finishes."""
        if self._detector is not None:
            for event in self._detector.flush():
                await self._on_vad(event)
        if self._turn is not None:
            await asyncio.wait([self._turn])

    async def close(self) -> None:
        """Cancel whatever is running (a reply is stored as far as it was heard)."""
        early = [self._early.transcription, self._early.task] if self._early else []
        tasks = [t for t in (self._speculative, self._turn, *early) if t is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # --- turn-taking ------------------------------------------------------------------------------

    async def _on_vad(self, event: VADEvent) -> None:
        if event.kind == "speech_start":
            await self._out.event({"type": "speech_start"})
            await self._barge_in()
        elif event.kind == "pause" and event.audio is not None:
            self._cancel_speculative()
            # Transcribe during the trailing silence; used if the turn ends without more speech.
            self._speculative = asyncio.create_task(self._timed_transcribe(event.audio))
            self._speculative.add_done_callback(_retrieve)
            if self.settings.preemptive_replies and not self.busy:
                self._early = EarlyReply(self._speculative, Commitment(), asyncio.Queue())
                self._early.task = asyncio.create_task(self._early_reply(self._early))
        elif event.kind == "resume":
            self._cancel_speculative()
        elif event.kind == "speech_end" and event.audio is not None:
            ended_at = time.perf_counter()
            await self._out.event({"type": "speech_end", "duration": round(event.audio.duration, 3)})
            speculative, self._speculative = self._speculative, None
            early, self._early = self._early, None
            self._turn = asyncio.create_task(self._run_turn(event.audio, speculative, ended_at, early))

    def _cancel_speculative(self) -> None:
        """The user goes on: the transcript so far, and any reply begun on it, are thrown away."""
        if self._speculative is not None:
            self._speculative.cancel()
            self._speculative = None
        if self._early is not None:
            self._early.cancel()
            self._early = None

    async def _barge_in(self) -> None:
        if not self.busy:
            return
        assert self._turn is not None
        said = self._reply.cut()
        self._turn.cancel()
        await asyncio.wait([self._turn])
        await self._out.event({"type": "interrupted", "said": said})

    async def _timed_transcribe(self, utterance: Audio) -> TimedTranscription:
        """The transcription and the milliseconds it took (queue wait included)."""
        began = time.perf_counter()
        transcription = await self.conversation.stt.transcribe_audio(utterance, self._options)
        return transcription, elapsed_ms(began)

    async def _transcribe(
        self, utterance: Audio, speculative: asyncio.Task[TimedTranscription] | None
    ) -> TimedTranscription:
        if speculative is not None:
            try:
                return await speculative
            except AppError:
                pass  # e.g. the STT queue was full then; try once more now
        return await self._timed_transcribe(utterance)

    async def _open_reply(
        self,
        transcription: Transcription,
        timings: dict[str, float],
        started: float,
        commitment: Commitment | None = None,
        asked: float | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """The reply to a transcript, admitted now (503 when the models are full); `started` is
        when the user finished speaking, `commitment` makes it pre-emptive."""
        text = await asyncio.to_thread(self.conversation.chat.fit_spoken, transcription.text)
        admission = self.conversation.check_ready(None, self.conversation_id)
        return self.conversation.respond(
            text,
            self.conversation_id,
            voice=self._voice,
            language=transcription.language,
            asked=asked if asked is not None else time.time(),
            started=started,
            timings=timings,
            played=self._reply.played_s,
            admission=admission,
            commitment=commitment,
        )

    async def _early_reply(self, early: EarlyReply) -> None:
        """Begin the reply on the transcript so far; its events wait in `early.events`."""
        try:
            transcription, stt_ms = await early.transcription
            if not transcription.text:
                return
            timings = {"stt_ms": stt_ms}
            events = await self._open_reply(transcription, timings, time.perf_counter(), early.commitment)
            async with aclosing(events) as stream:
                async for event in stream:
                    await early.events.put(event)
        except Exception as e:  # handed to the turn, which answers without it
            await early.events.put(e)
        finally:
            early.events.put_nowait(None)

    async def _run_turn(
        self,
        utterance: Audio,
        speculative: asyncio.Task[TimedTranscription] | None,
        ended_at: float,
        early: EarlyReply | None = None,
    ) -> None:
        self._reply.reset()
        asked = time.time()
        try:
            # stt_ms is the transcription's own time, even when it ran during the trailing
            # silence and was ready before the turn began (then it adds nothing to total_ms).
            transcription, stt_ms = await self._transcribe(utterance, speculative)
            timings = {"stt_ms": stt_ms}
            transcript = {
                "type": "transcript",
                "text": transcription.text,
                "language": transcription.language,
            }
            if not transcription.text:
                await self._out.event(transcript)
                timings["total_ms"] = elapsed_ms(ended_at)
                await self._out.event({"type": "turn_end", "reply": "", "timings": timings})
                return
            if early is not None and await self._reply.take_over(early, transcript, ended_at):
                return
            events = await self._open_reply(transcription, timings, ended_at, asked=asked)
            async with aclosing(events) as stream:
                async for event in stream:
                    await self._reply.send(event, transcript)
        except AppError as e:
            # The turn fails (a busy model, an over-long text); the session goes on.
            await self._out.event({"type": "error", "code": e.code, "message": e.message})
        except Exception:
            # A send to a client that has gone, or a fault of ours: the transport notices the
            # former and closes the session; the latter must not pass silently.
            logger.exception("realtime turn failed in conversation %s", self.conversation_id)
        finally:
            if early is not None and early.task is not None and not early.task.done():
                early.task.cancel()  # a barge-in: the reply is stored as far as it was heard
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([early.task])


def _retrieve(task: asyncio.Task[TimedTranscription]) -> None:
    """Mark a discarded task's failure as seen (it is retried or irrelevant)."""
    if not task.cancelled():
        task.exception()


class RealtimeService:
    """Opens sessions, at most `max_sessions` at once; owns the VAD model they share."""

    def __init__(
        self,
        conversation: ConversationService,
        vad: SileroVAD,
        settings: RealtimeSettings,
        vad_settings: VADSettings | None = None,
    ) -> None:
        self.conversation = conversation
        self.vad = vad
        self.settings = settings
        self.vad_settings = vad_settings or VADSettings()
        self.active = 0

    @contextlib.asynccontextmanager
    async def session(self, outbox: Outbox) -> AsyncGenerator[RealtimeSession, None]:
        """A session for the length of the block; closed (its work cancelled) on the way out."""
        if self.active >= self.settings.max_sessions:
            raise OverloadedError(
                f"{self.active} realtime sessions are open, the most this server allows; retry later",
                retry_after_s=5,
            )
        self.active += 1
        session = RealtimeSession(self.conversation, self.vad, self.settings, outbox, self.vad_settings)
        try:
            yield session
        finally:
            try:
                await session.close()
            finally:
                self.active -= 1
