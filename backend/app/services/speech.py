"""Speech being made: the stream `TTSService.speak` and `TTSService.speak_stream` open.

A `SpeechStream` is opened only after every check its request makes (text, voice, limits, the TTS
queue), so a route can answer 4xx or 503 before its 200, and then yields the speech piece by piece.
Each piece is one call on the TTS worker, so pieces of concurrent requests interleave fairly.

- Whole text (`speak`): the text was cleaned and segmented when the stream opened; each segment is
  a piece. The request holds one TTS slot from its admission to its last piece, and
  TTS_TIMEOUT_S bounds the whole synthesis.
- A script (`speak_script`): like a whole text, but each piece is one turn spoken in its
  speaker's voice, or, for an engine that voices several speakers at once, one window of turns
  (services/dialogue.py).
- Text that streams in (`speak_stream`, an LLM's reply): the deltas pass through as `ReplyText`
  as soon as they arrive, a sentence chunker (built from the TTS settings) turns them into pieces
  as early as is safe, and each piece is cleaned, segmented and spoken while the rest is still
  being generated. Its pieces are follow-ups of work admitted as a whole elsewhere (a spoken turn),
  never refused half-way through, and each is bounded by TTS_TIMEOUT_S.

Closing the stream early stops the synthesis (and closes the deltas, which stops their producer).

The stream makes its audio through a `Renderer`, the narrow surface of the engine it needs (built
by the TTS service: services/synthesis.py), never through the service itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import anyio

from backend.app.audio.types import Audio
from backend.app.core.quotas import charge_audio
from backend.app.core.worker import Admission
from backend.app.services.dialogue import Cast, CastMember, WindowTurn
from backend.app.text.segment import SentenceChunker
from backend.app.voices.library import VoiceInfo


@dataclass(frozen=True)
class ReplyText:
    """A delta of the text being spoken, passed through as it arrived."""

    text: str


@dataclass(frozen=True)
class ReplyAudio:
    """The audio of one piece of the speech (from the second piece on, it starts with the gap)."""

    audio: Audio
    index: int
    text: str
    turns: tuple[int, ...] = ()
    """The script turns this piece speaks (a script only)."""
    speakers: tuple[str, ...] = ()
    """Their speakers' labels, in order (a script only)."""


SpeechEvent = ReplyText | ReplyAudio


class Renderer(Protocol):
    """What a speech stream needs of the engine: text into pieces, a voice's prompt, one segment's
    or one window's audio (blocking), run on the TTS worker, and the stage timings it reports."""

    @property
    def sample_rate(self) -> int: ...

    def chunker(self) -> SentenceChunker:
        """A sentence chunker for text that streams in."""
        ...

    def segments(self, piece: str) -> list[str]:
        """`piece` cleaned and segmented ([] when it has nothing speakable)."""
        ...

    def prompt_for(self, voice: VoiceInfo | None) -> object | None:
        """The engine's prompt for `voice` (blocking), None for a fixed-voice engine."""
        ...

    def render(
        self,
        text: str,
        prompt: object | None,
        cfg_scale: float,
        speed: float,
        *,
        first: bool,
        joined: bool,
        speaker: str | None = None,
    ) -> Audio: ...

    def render_window(
        self,
        window: tuple[WindowTurn, ...],
        prompts: Mapping[str, object | None],
        cfg_scale: float,
        speed: float,
        *,
        first: bool,
    ) -> Audio: ...

    def deadline(self) -> float | None:
        """When work admitted now must be done (None: unbounded)."""
        ...

    async def on_worker(
        self, render: Callable[[], Audio], admission: Admission | None, deadline: float | None
    ) -> Audio:
        """`render()` on the TTS worker, in `admission`'s slot by `deadline`, else as a follow-up."""
        ...

    def observe_stage(self, stage: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Piece:
    """One synthesis call's worth of text: as written, and its cleaned segments. A script's turn
    names its speaker; a window (an engine that voices several speakers at once) lists its turns."""

    text: str
    segments: list[str]
    speaker: CastMember | None = None
    window: tuple[WindowTurn, ...] = ()
    turns: tuple[int, ...] = ()


class SpeechStream:
    """One request's speech, yielded piece by piece (async-iterate it; `aclose()` to stop early)."""

    def __init__(
        self,
        renderer: Renderer,
        pieces: AsyncGenerator[Piece, None],
        voice: VoiceInfo | None,
        *,
        cfg_scale: float,
        speed: float = 1.0,
        segments: int | None = None,
        admission: Admission | None = None,
        passthrough: AsyncQueueSource | None = None,
        engine_voice: str | None = None,
        cast: Cast | None = None,
    ) -> None:
        self._renderer = renderer
        self.sample_rate = renderer.sample_rate
        self.voice = voice
        """The reference voice imitated (None when the engine has a fixed voice)."""
        self.engine_voice = engine_voice
        """One of the engine's own voices, when the request chose one (`piper:<name>`)."""
        self.cast = cast
        """A script's speakers and their voices (None for plain text)."""
        self.turns = 0
        """A script's turn count (0 for plain text)."""
        self.segments = segments
        """How many synthesis calls the whole text makes (None for text that streams in)."""
        self.first_s: float | None = None
        """How long the first piece took to synthesise, its wait for the model included."""
        self.busy_s = 0.0
        """Time spent synthesising (waits for the model included), all pieces together."""
        self._pieces = pieces
        self._cfg_scale = cfg_scale
        self._speed = speed
        self._admission = admission
        self._passthrough = passthrough
        self._joined = segments is None or segments > 1
        self._prompts: dict[str, object | None] = {}
        self._spoken = 0
        self._deadline = renderer.deadline() if admission is not None else None
        self._events = self._run()

    def __aiter__(self) -> AsyncIterator[SpeechEvent]:
        return self._events

    async def aclose(self) -> None:
        """Stop the speech (a stream never iterated gives its TTS slot back)."""
        await self._events.aclose()
        if self._admission is not None:
            self._admission.release()

    async def audio(self) -> AsyncGenerator[Audio, None]:
        """Only the audio, chunk by chunk (closing this closes the stream)."""
        async with aclosing(self._events) as events:
            async for event in events:
                if isinstance(event, ReplyAudio):
                    yield event.audio

    async def collect(self) -> Audio:
        """Run to the end; all the audio, joined."""
        return Audio.join([chunk async for chunk in self.audio()], self.sample_rate)

    def _prompt(self, voice: VoiceInfo | None) -> object | None:
        """The engine's prompt for `voice`, fetched once per stream (blocking on a cache miss)."""
        if voice is None:
            return None
        if voice.file not in self._prompts:
            self._prompts[voice.file] = self._renderer.prompt_for(voice)
        return self._prompts[voice.file]

    def _render(self, piece: Piece) -> Audio:
        """One piece's audio (blocking, on the TTS worker)."""
        first = self._spoken == 0
        if piece.window:
            assert self.cast is not None
            members = self.cast.members
            prompts = {t.speaker: self._prompt(members[t.speaker].voice) for t in piece.window}
            self._spoken += 1
            return self._renderer.render_window(
                piece.window, prompts, self._cfg_scale, self._speed, first=first
            )
        member = piece.speaker
        prompt = self._prompt(member.voice if member else self.voice)
        engine_voice = member.engine_voice if member else self.engine_voice
        chunks = []
        for segment in piece.segments:
            first = self._spoken == 0
            audio = self._renderer.render(
                segment,
                prompt,
                self._cfg_scale,
                self._speed,
                first=first,
                joined=self._joined,
                speaker=engine_voice,
            )
            chunks.append(audio)
            self._spoken += 1
        return Audio.join(chunks, self.sample_rate)

    async def _synthesize(self, piece: Piece) -> Audio:
        began = time.perf_counter()
        audio = await self._renderer.on_worker(partial(self._render, piece), self._admission, self._deadline)
        charge_audio("tts", audio.duration)  # to the request's API key, for its daily audio quota
        took = time.perf_counter() - began
        self.busy_s += took
        if self.first_s is None:
            self.first_s = took
            self._renderer.observe_stage("tts_first_audio", took)
        return audio

    async def _speak(self) -> AsyncGenerator[ReplyAudio, None]:
        index = 0
        async with aclosing(self._pieces) as pieces:
            async for piece in pieces:
                audio = await self._synthesize(piece)
                yield ReplyAudio(audio, index, piece.text, piece.turns, self._labels(piece))
                index += 1

    def _labels(self, piece: Piece) -> tuple[str, ...]:
        """The labels of the speakers a script's piece speaks, in order."""
        if self.cast is None:
            return ()
        keys = [t.speaker for t in piece.window] or ([piece.speaker.speaker] if piece.speaker else [])
        return tuple(self.cast.members[key].label for key in dict.fromkeys(keys))

    async def _run(self) -> AsyncGenerator[SpeechEvent, None]:
        try:
            if self._passthrough is None:
                async with aclosing(self._speak()) as spoken:
                    async for piece in spoken:
                        yield piece
            else:
                async with aclosing(self._merged(self._passthrough)) as events:
                    async for event in events:
                        yield event
            self._renderer.observe_stage("tts", self.busy_s)
        finally:
            if self._admission is not None:
                self._admission.release()

    async def _merged(self, source: AsyncQueueSource) -> AsyncGenerator[SpeechEvent, None]:
        """The passed-through text and the spoken pieces, each as soon as it is ready: the deltas
        are read on one task (so the text is never held up by synthesis), the pieces spoken on
        another."""
        events: asyncio.Queue[SpeechEvent | BaseException | None] = asyncio.Queue()

        async def speak() -> None:
            try:
                async with aclosing(self._speak()) as spoken:
                    async for piece in spoken:
                        events.put_nowait(piece)
                events.put_nowait(None)
            except Exception as e:
                events.put_nowait(e)

        tasks = [asyncio.create_task(source.pump(events)), asyncio.create_task(speak())]
        try:
            while (event := await events.get()) is not None:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with suppress(asyncio.CancelledError, Exception):
                        await task


class AsyncQueueSource:
    """Reads text deltas on a task of its own: each is passed on as `ReplyText` at once and fed to
    the chunker, whose pieces (cleaned and segmented) go to the speaking side through a queue."""

    def __init__(self, deltas: AsyncIterator[str], renderer: Renderer) -> None:
        self._deltas = deltas
        self._renderer = renderer
        self._pieces: asyncio.Queue[Piece | BaseException | None] = asyncio.Queue()

    async def pump(self, events: asyncio.Queue[SpeechEvent | BaseException | None]) -> None:
        chunker = self._renderer.chunker()
        try:
            try:
                async for delta in self._deltas:
                    events.put_nowait(ReplyText(delta))
                    for piece in chunker.feed(delta):
                        self._put(piece)
                for piece in chunker.flush():
                    self._put(piece)
            finally:
                close = getattr(self._deltas, "aclose", None)
                if close is not None:
                    await close()  # an LLM stream: stop its generation now
            self._pieces.put_nowait(None)
        except Exception as e:
            self._pieces.put_nowait(e)

    def _put(self, piece: str) -> None:
        segments = self._renderer.segments(piece)
        if segments:
            self._pieces.put_nowait(Piece(piece, segments))

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        while (piece := await self._pieces.get()) is not None:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
