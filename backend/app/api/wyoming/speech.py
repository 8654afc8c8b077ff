"""Text to speech over Wyoming: `synthesize` (a whole text, segmented as on /tts) and the streamed
form (`synthesize-start`, `synthesize-chunk`s, `synthesize-stop`), spoken sentence by sentence as
the text arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import SynthesizeStopped, SynthesizeVoice

from backend.app.api.wyoming.protocol import error_event
from backend.app.audio.encode import to_pcm16
from backend.app.audio.types import Audio
from backend.app.core.errors import AppError, NotFoundError, TextTooLongError
from backend.app.services.dialogue import ENGINE_VOICE_PREFIX
from backend.app.services.speech import ReplyAudio, SpeechStream
from backend.app.services.tts import TTSService

SAMPLES_PER_CHUNK = 1024
"""Audio per `audio-chunk` event, as wyoming-piper sends it."""

Write = Callable[[Event], Awaitable[None]]


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
    info = tts.backend.info
    if voice.name in (info.id, info.model) and not tts.backend.supports_cloning:
        if not voice.speaker:
            return None
        if voice.speaker not in tts.engine_voices:
            raise NotFoundError(f"the voice {voice.name!r} has no speaker {voice.speaker!r}")
        return ENGINE_VOICE_PREFIX + voice.speaker
    if voice.name:
        return voice.name
    return tts.voice_for_language(primary_language(voice.language))


async def send_audio(write: Write, audio: Audio) -> None:
    """One utterance: `audio-start`, its `audio-chunk`s (16-bit mono at the engine's rate), `audio-stop`."""
    rate = audio.sample_rate
    await write(AudioStart(rate=rate, width=2, channels=1).event())
    await send_chunks(write, audio)
    await write(AudioStop().event())


async def send_chunks(write: Write, audio: Audio) -> None:
    pcm = to_pcm16(audio)
    step = SAMPLES_PER_CHUNK * 2
    for offset in range(0, len(pcm), step):
        chunk = AudioChunk(rate=audio.sample_rate, width=2, channels=1, audio=pcm[offset : offset + step])
        await write(chunk.event())


async def synthesize(tts: TTSService, write: Write, text: str, voice: SynthesizeVoice | None) -> None:
    """A whole text: one `audio-start`, each segment's chunks as soon as it is synthesised, one
    `audio-stop`. Checked (and the TTS slot taken, 503) before any audio."""
    name = await asyncio.to_thread(chosen_voice, tts, voice)
    stream = await tts.speak(text, voice=name)
    started = False
    async with aclosing(stream.audio()) as pieces:
        async for audio in pieces:
            if not started:
                await write(AudioStart(rate=audio.sample_rate, width=2, channels=1).event())
                started = True
            await send_chunks(write, audio)
    if not started:
        await write(AudioStart(rate=stream.sample_rate, width=2, channels=1).event())
    await write(AudioStop().event())


class TextStream:
    """One streamed synthesis: text pushed in as `synthesize-chunk`s arrive, each sentence spoken as
    soon as it is complete (its own `audio-start` .. `audio-stop`), `synthesize-stopped` at the end."""

    def __init__(self, tts: TTSService, write: Write, voice: SynthesizeVoice | None) -> None:
        self._tts = tts
        self._write = write
        self._voice = voice
        self._text: asyncio.Queue[str | None] = asyncio.Queue()
        self._chars = 0
        self.failed = False
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check the voice and the TTS queue (errors before anything is spoken), then start."""
        name = await asyncio.to_thread(chosen_voice, self._tts, self._voice)
        self._tts.worker.check()  # 503 now when the queue is full; the sentences follow it up
        stream = await self._tts.speak_stream(self._deltas(), voice=name)
        self.task = asyncio.create_task(self._speak(stream), name="wyoming-tts-stream")

    def push(self, text: str) -> None:
        if self.failed:
            return  # the client has had its error; the rest of the text is not spoken
        self._chars += len(text)
        if self._chars > self._tts.settings.max_chars:
            raise TextTooLongError(
                f"the streamed text passed {self._tts.settings.max_chars} characters (MAX_TTS_CHARS)"
            )
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
                    await send_audio(self._write, event.audio)
        except AppError as e:
            self.failed = True
            await self._write(error_event(e))
            return
        finally:
            await stream.aclose()
        if not self.failed:
            await self._write(SynthesizeStopped().event())

    async def aclose(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
