"""Speech over Wyoming: the transcript of collected audio (`send_transcript`), and text to speech:
`synthesize` (a whole text, segmented as on /tts) and the streamed form (`synthesize-start`,
`synthesize-chunk`s, `synthesize-stop`), spoken sentence by sentence as the text arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar, cast

from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import SynthesizeStopped, SynthesizeVoice

from backend.app.api.protocols.wyoming.protocol import EventWriter, error_event
from backend.app.audio.encode import to_pcm16
from backend.app.audio.types import Audio
from backend.app.core.errors import AppError, NotFoundError
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.dialogue import ENGINE_VOICE_PREFIX
from backend.app.services.speech import ReplyAudio, SpeechStream
from backend.app.services.stt import STTService, text_deltas
from backend.app.services.tts import TTSService

SAMPLES_PER_CHUNK = 1024
"""Audio per `audio-chunk` event, as wyoming-piper sends it."""

T = TypeVar("T")


def primary_language(language: str | None) -> str | None:
    """`en-US`, `en_US`, `zh-TW` -> `en`, `zh` (Home Assistant's tags -> Whisper's codes)."""
    if not language or not isinstance(language, str):
        return None
    return language.replace("_", "-").split("-")[0].strip().lower() or None


def chosen_voice(tts: TTSService, voice: SynthesizeVoice | None) -> str | None:
    """The voice name for the services (None: the default) from a Wyoming voice (blocking: may
    list the library). The engine's own voice (the one `info` lists when it cannot clone) takes a
    speaker of a multi-speaker model; a library voice is named by its file stem; a language alone
    picks a library voice of that language."""
    if voice is None:
        return None
    info = tts.info
    if voice.name in (info.id, info.model) and not tts.supports_cloning:
        if not voice.speaker:
            return None
        if voice.speaker not in tts.engine_voices:
            raise NotFoundError(f"the voice {voice.name!r} has no speaker {voice.speaker!r}")
        return ENGINE_VOICE_PREFIX + voice.speaker
    if voice.name:
        return voice.name
    return tts.voice_for_language(primary_language(voice.language))


def audio_events(audio: Audio) -> list[Event]:
    """`audio` as `audio-chunk` events: 16-bit mono at the engine's rate."""
    pcm = to_pcm16(audio)
    step = SAMPLES_PER_CHUNK * 2
    return [
        AudioChunk(rate=audio.sample_rate, width=2, channels=1, audio=pcm[offset : offset + step]).event()
        for offset in range(0, len(pcm), step)
    ]


def start_event(rate: int) -> Event:
    return AudioStart(rate=rate, width=2, channels=1).event()


async def _voice_name(tts: TTSService, voice: SynthesizeVoice | None) -> str | None:
    return None if voice is None else await asyncio.to_thread(chosen_voice, tts, voice)


async def synthesize(tts: TTSService, out: EventWriter, text: str, voice: SynthesizeVoice | None) -> None:
    """A whole text: one `audio-start`, each segment's chunks as soon as it is synthesised, one
    `audio-stop`. Checked (and the TTS slot taken, 503) before any audio."""
    stream = await tts.speak(text, voice=await _voice_name(tts, voice))
    started = False
    async with aclosing(ahead(stream.audio())) as pieces:
        async for audio in pieces:
            head = [] if started else [start_event(audio.sample_rate)]
            started = True
            await out.write_many([*head, *audio_events(audio)])
    await out.write_many([*([] if started else [start_event(stream.sample_rate)]), AudioStop().event()])


async def ahead(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`items`, one fetched ahead: the next segment is synthesised while this one's chunks are
    sent, so the model never waits for the network. Closing this stops the fetching."""
    queue: asyncio.Queue[tuple[T | None, BaseException | None, bool]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for item in items:
                await queue.put((item, None, False))
        except Exception as e:  # handed to the consumer, raised there
            await queue.put((None, e, True))
            return
        await queue.put((None, None, True))

    task = asyncio.create_task(pump())
    try:
        while True:
            item, error, done = await queue.get()
            if error is not None:
                raise error
            if done:
                return
            yield cast(T, item)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await items.aclose()


class TextStream:
    """One streamed synthesis: text pushed in as `synthesize-chunk`s arrive, each sentence spoken as
    soon as it is complete (its own `audio-start` .. `audio-stop`), `synthesize-stopped` at the end."""

    def __init__(self, tts: TTSService, out: EventWriter, voice: SynthesizeVoice | None) -> None:
        self._tts = tts
        self._out = out
        self._voice = voice
        self._text: asyncio.Queue[str | None] = asyncio.Queue()
        self._chars = 0
        self.failed = False
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check the voice and the TTS queue (errors before anything is spoken), then start."""
        name = await _voice_name(self._tts, self._voice)
        self._tts.check_admission()  # 503 now when the queue is full; the sentences follow it up
        stream = await self._tts.speak_stream(self._deltas(), voice=name)
        self.task = asyncio.create_task(self._speak(stream), name="wyoming-tts-stream")

    def push(self, text: str) -> None:
        if self.failed:
            return  # the client has had its error; the rest of the text is not spoken
        self._chars += len(text)
        self._tts.check_streamed_chars(self._chars)
        self._text.put_nowait(text)

    def end(self) -> None:
        self._text.put_nowait(None)

    async def _deltas(self) -> AsyncGenerator[str, None]:
        while (text := await self._text.get()) is not None:
            yield text

    async def _speak(self, stream: SpeechStream) -> None:
        """Speak until the text ends; an error (a 422 sentence, the stage's timeout) is reported
        as an `error` event and ends the stream, and the rest of its text is dropped."""
        try:
            async for event in stream:
                if isinstance(event, ReplyAudio) and len(event.audio.samples):
                    audio = event.audio
                    await self._out.write_many(
                        [start_event(audio.sample_rate), *audio_events(audio), AudioStop().event()]
                    )
        except AppError as e:
            self.failed = True
            await self._out.write(error_event(e))
            return
        finally:
            await stream.aclose()
        if not self.failed:
            await self._out.write(SynthesizeStopped().event())

    async def aclose(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def send_transcript(
    out: EventWriter, stt: STTService, audio: Audio, options: TranscribeOptions
) -> None:
    """`transcript-start`, a `transcript-chunk` per segment as Whisper decodes it, the whole
    `transcript` (for clients that read only that), `transcript-stop`."""
    if len(audio.samples) == 0:
        await out.write_many(
            (
                TranscriptStart(language=options.language).event(),
                Transcript(text="", language=options.language).event(),
                TranscriptStop().event(),
            )
        )
        return
    stream = stt.open_audio_stream(audio, options)  # 4xx / 503 before any event
    await out.write(TranscriptStart(language=options.language).event())
    final: Transcription | None = None
    async for delta, item in text_deltas(stream):
        if isinstance(item, Transcription):
            final = item
        elif delta.strip():
            await out.write(TranscriptChunk(text=delta).event())
    assert final is not None
    await out.write_many(
        (Transcript(text=final.text, language=final.language).event(), TranscriptStop().event())
    )
