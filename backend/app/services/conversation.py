"""One spoken turn: transcribe the user's audio, reply, speak the reply and keep it for download.

The reply streams: the LLM's deltas go through a sentence chunker, and each complete piece is
spoken while the LLM goes on generating, so the first audio is ready long before the reply is.
The non-streamed turn is the streamed one collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import anyio
import numpy as np

from backend.app.audio.encode import AudioFormat, encode_audio
from backend.app.audio.types import Audio
from backend.app.core.errors import NotFoundError
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.core.worker import Admission, Gate, Ticket
from backend.app.services.chat import ChatService, check_conversation_id, elapsed_ms
from backend.app.services.outputs import OutputStore
from backend.app.services.stt import STTService
from backend.app.services.tts import TTSService
from backend.app.storage.conversations import Turn as StoredTurn
from backend.app.text.segment import SentenceChunker, join_pieces

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    transcript: str
    reply: str
    conversation_id: str | None
    audio_name: str | None
    timings: dict[str, float]
    interrupted: bool = False


@dataclass(frozen=True)
class Heard:
    """The user's turn is stored; the reply follows. (First event of `respond`.)"""

    text: str


@dataclass(frozen=True)
class ReplyText:
    """A delta of the reply's text."""

    text: str


@dataclass(frozen=True)
class ReplyAudio:
    """The audio of one piece of the reply (from the second piece on, it starts with the gap)."""

    audio: Audio
    index: int
    text: str


TurnEvent = Heard | ReplyText | ReplyAudio | Turn

PlayedSeconds = Callable[[], float]
"""How many seconds of the reply's audio the listener has heard so far."""


@dataclass
class TurnStream:
    """A turn whose transcript is known and whose reply is still to come (`events`)."""

    transcription: Transcription
    conversation_id: str | None
    events: AsyncGenerator[TurnEvent, None]


def heard_pieces(spoken: list[ReplyAudio], played_s: float | None) -> list[ReplyAudio]:
    """The pieces the listener heard at least the start of (all of them when `played_s` is None)."""
    if played_s is None:
        return spoken
    heard, offset = [], 0.0
    for piece in spoken:
        if offset >= played_s:
            break
        heard.append(piece)
        offset += piece.audio.duration
    return heard


@dataclass
class TurnSlot:
    """A spoken turn's places: its ticket at the turn gate, and its LLM slot, reserved in order."""

    ticket: Ticket
    llm: Admission

    def release(self) -> None:
        """Give both back (idempotent); an LLM slot the reply already used is not counted twice."""
        self.llm.release()
        self.ticket.release()


class ConversationService:
    """STT -> chat -> TTS, calling the three services directly."""

    def __init__(
        self,
        stt: STTService,
        chat: ChatService,
        tts: TTSService,
        outputs: OutputStore,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.stt = stt
        self.chat = chat
        self.tts = tts
        self.outputs = outputs
        self.metrics = metrics or ServiceMetrics()
        self.turns = Gate("spoken turns", chat.worker.capacity)
        """Turns in progress, from admission to the stored reply: as many as the LLM admits."""

    def _stored_voice(self, conversation_id: str) -> str | None:
        """The conversation's own reply voice, if it still exists in the library."""
        stored = self.chat.store.get(conversation_id)
        if not stored or not stored.voice:
            return None
        try:
            return self.tts.voices.by_name(stored.voice).file
        except NotFoundError:
            logger.warning(
                "voice %s of conversation %s is gone; using the default", stored.voice, conversation_id
            )
            return None

    def check_ready(self, voice: str | None, conversation_id: str | None = None) -> TurnSlot:
        """Fail fast, before any work: an unknown voice (404), too many turns in progress or on
        this conversation (503). A turn is admitted as a whole, at the turn gate (as many turns as
        the LLM admits requests, QUEUE_SIZE + 1 in one process), and then reserves its stages in
        order: the LLM slot now (kept for the reply, `respond(..., admission=)`), its transcription
        and each TTS piece as follow-ups. So single-stage requests filling one queue cannot starve
        turns, which need all three: under overload turns are served at the gate's rate, and
        refused only when it is full."""
        if voice:
            self.tts.choose_voice(voice, None)
        # The turn and its audio are stored: on a full disk, 507 before any work (not an error
        # event after the audio went out).
        self.chat.store.require_room()
        self.outputs.require_room()
        if conversation_id:
            self.chat.check_room(conversation_id)
        ticket = self.turns.enter()
        return TurnSlot(ticket, self.chat.worker.admit(reserved=True))

    async def begin_turn(
        self,
        audio: bytes,
        conversation_id: str | None = None,
        voice: str | None = None,
        options: TranscribeOptions | None = None,
        audio_format: AudioFormat = "wav",
    ) -> TurnStream:
        """Validate and transcribe now (so errors come before any streaming); the reply follows in
        the returned stream's `events`. Silence gives an empty transcript and no reply."""
        cid = check_conversation_id(conversation_id) if conversation_id else None
        admission = self.check_ready(voice, cid)
        try:
            started = time.perf_counter()
            asked = time.time()
            transcription = await self.stt.transcribe(audio, options or TranscribeOptions(), reserved=True)
            timings = {"stt_ms": elapsed_ms(started)}
            if not transcription.text:
                admission.release()
                return TurnStream(transcription, cid, _nothing_to_say(cid, timings, started))
            text = await asyncio.to_thread(self.chat.fit_spoken, transcription.text)
            cid = cid or check_conversation_id(None)
        except BaseException:
            admission.release()
            raise
        events = self.respond(
            text,
            cid,
            voice=voice,
            language=transcription.language,
            asked=asked,
            started=started,
            timings=timings,
            audio_format=audio_format,
            admission=admission,
        )
        return TurnStream(transcription, cid, events)

    async def turn(
        self,
        audio: bytes,
        conversation_id: str | None = None,
        voice: str | None = None,
        options: TranscribeOptions | None = None,
        audio_format: AudioFormat = "wav",
    ) -> Turn:
        """Run one turn and store it: the streamed turn, collected."""
        return await collect(await self.begin_turn(audio, conversation_id, voice, options, audio_format))

    async def respond(
        self,
        text: str,
        conversation_id: str,
        *,
        voice: str | None,
        language: str | None,
        asked: float,
        started: float,
        timings: dict[str, float],
        audio_format: AudioFormat = "wav",
        played: PlayedSeconds | None = None,
        admission: TurnSlot | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Reply to `text` (already transcribed) as a stream: `Heard` once the user's turn is
        stored, then `ReplyText` deltas and `ReplyAudio` pieces as they are ready, then the `Turn`.

        Closing the stream early (barge-in, a client gone) cancels the LLM and TTS work and stores
        the reply as far as the listener heard it (`played`; by default every piece handed out),
        marked interrupted. `started` is when the user finished speaking: `first_audio_ms` counts
        from it. `admission` is the LLM slot `check_ready` took for this reply.
        """
        try:
            async with self.chat.serialised(conversation_id):
                # The user's words are kept whatever becomes of the reply.
                await self.chat.store_turns(
                    conversation_id,
                    StoredTurn(
                        "user",
                        text,
                        created_at=asked,
                        language=language,
                        timings={"stt_ms": timings.get("stt_ms", 0.0)},
                    ),
                )
                yield Heard(text)
                if not voice:
                    voice = await asyncio.to_thread(self._stored_voice, conversation_id)
                speaker = self.tts.sentence_speaker(voice)
                queue: asyncio.Queue[ReplyText | ReplyAudio | Exception | None] = asyncio.Queue()
                pieces: asyncio.Queue[str | None] = asyncio.Queue()
                reply_parts: list[str] = []
                spoken: list[ReplyAudio] = []

                async def think() -> None:
                    began = time.perf_counter()
                    chunker = SentenceChunker(max_chars=self.tts.settings.segment_threshold_chars)
                    try:
                        llm = admission.llm if admission else None
                        async with aclosing(self.chat.generate(conversation_id, text, llm)) as deltas:
                            async for delta in deltas:
                                timings.setdefault("llm_first_token_ms", elapsed_ms(began))
                                reply_parts.append(delta)
                                queue.put_nowait(ReplyText(delta))
                                for piece in chunker.feed(delta):
                                    pieces.put_nowait(piece)
                        timings["llm_ms"] = elapsed_ms(began)
                        timings.setdefault("llm_first_token_ms", timings["llm_ms"])
                        for piece in chunker.flush():
                            pieces.put_nowait(piece)
                        pieces.put_nowait(None)
                    except Exception as e:
                        queue.put_nowait(e)

                async def speak() -> None:
                    busy = 0.0
                    try:
                        while (piece := await pieces.get()) is not None:
                            began = time.perf_counter()
                            audio = await speaker.speak(piece)
                            busy += time.perf_counter() - began
                            if audio is None:
                                continue
                            if "first_audio_ms" not in timings:
                                timings["tts_first_audio_ms"] = elapsed_ms(began)
                                timings["first_audio_ms"] = elapsed_ms(started)
                                self.metrics.observe_stage(
                                    "tts_first_audio", timings["tts_first_audio_ms"] / 1000
                                )
                                self.metrics.observe_stage("first_audio", timings["first_audio_ms"] / 1000)
                            queue.put_nowait(ReplyAudio(audio, len(spoken), piece))
                        timings["tts_ms"] = round(busy * 1000, 1)
                        self.metrics.observe_stage("tts", busy)
                        queue.put_nowait(None)
                    except Exception as e:
                        queue.put_nowait(e)

                tasks = [asyncio.create_task(think()), asyncio.create_task(speak())]
                finished = False
                try:
                    while (event := await queue.get()) is not None:
                        if isinstance(event, Exception):
                            raise event
                        if isinstance(event, ReplyAudio):
                            spoken.append(event)
                        yield event
                    finished = True
                finally:
                    with anyio.CancelScope(shield=True):
                        for task in tasks:
                            task.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                        heard = heard_pieces(spoken, None if finished or played is None else played())
                        if finished:
                            reply = "".join(reply_parts).strip()
                        else:
                            reply = join_pieces([piece.text for piece in heard])
                        timings.setdefault("tts_first_audio_ms", 0.0)
                        timings.setdefault("first_audio_ms", 0.0)
                        timings["total_ms"] = elapsed_ms(started)
                        audio = [p.audio for p in heard]
                        name = await self._save_audio(audio, speaker.sample_rate, audio_format)
                        await self.chat.store_turns(
                            conversation_id,
                            StoredTurn(
                                "assistant",
                                reply,
                                voice=speaker.voice.file if speaker.voice else None,
                                audio_file=name,
                                timings=dict(timings),
                                interrupted=not finished,
                            ),
                        )
            yield Turn(text, reply, conversation_id, name, dict(timings))
        finally:
            if admission is not None:
                admission.release()  # the LLM slot is unused if the reply never reached the LLM

    async def _save_audio(self, chunks: list[Audio], rate: int, audio_format: AudioFormat) -> str | None:
        if not chunks:
            return None
        audio = Audio(np.concatenate([c.samples for c in chunks]), rate)
        data = await asyncio.to_thread(encode_audio, audio, audio_format)
        return await asyncio.to_thread(self.outputs.save, data, audio_format)


async def collect(stream: TurnStream) -> Turn:
    """Run a streamed turn to its end; its last event is the Turn."""
    async with aclosing(stream.events) as events:
        async for event in events:
            if isinstance(event, Turn):
                return event
    raise AssertionError("a turn's events end with the Turn")


async def _nothing_to_say(
    conversation_id: str | None, timings: dict[str, float], started: float
) -> AsyncGenerator[TurnEvent, None]:
    """The events of a silent turn: no reply, nothing stored."""
    timings.update(llm_first_token_ms=0.0, llm_ms=0.0, tts_first_audio_ms=0.0, tts_ms=0.0)
    timings.update(first_audio_ms=0.0, total_ms=elapsed_ms(started))
    yield Turn("", "", conversation_id, None, dict(timings))
