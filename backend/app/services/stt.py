"""The STT service: validate, decode and transcribe an upload on the STT model's worker."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.backends.protocols import SpeechToText
from backend.app.core.backlog import measured_units
from backend.app.core.config import STTSettings
from backend.app.core.errors import AudioTooLongError, InvalidInputError
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.quotas import charge_audio
from backend.app.core.values import ModelInfo, TranscribeOptions, Transcription, TranscriptSegment
from backend.app.core.worker import ModelWorker
from backend.app.text.languages import WHISPER_LANGUAGES
from backend.app.text.segment import join_pieces


class STTService:
    """Speech to text. Decoding and inference both run on the model's worker thread."""

    def __init__(
        self,
        backend: SpeechToText,
        worker: ModelWorker,
        settings: STTSettings,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()

    @property
    def info(self) -> ModelInfo:
        """The STT model: its id, name and device."""
        return self.backend.info

    @property
    def sample_rate(self) -> int:
        """The rate the model hears at (audio collected for it is kept at this rate)."""
        return self.backend.sample_rate

    @property
    def multilingual(self) -> bool:
        """Whether the model hears languages other than English."""
        return self.backend.multilingual

    @property
    def max_audio_s(self) -> float:
        """The longest audio one transcription takes (MAX_AUDIO_SECONDS)."""
        return self.settings.max_audio_seconds

    @property
    def idle(self) -> bool:
        """Nothing is waiting for the model: a courtesy transcription (a partial) may go now."""
        return not self.worker.pending

    def check_options(self, options: TranscribeOptions) -> None:
        language = options.language
        if language is None:
            return
        if language not in WHISPER_LANGUAGES:
            raise InvalidInputError(
                f"unknown language code {language!r} (use ISO 639-1, e.g. en, zh)", param="language"
            )
        if language != "en" and not self.backend.multilingual:
            raise InvalidInputError(
                f"the STT model {self.backend.info.model} is English-only; "
                "set STT_MODEL_NAME=base-multilingual (or a multilingual model) for other languages",
                param="language",
            )

    async def transcribe(
        self, data: bytes, options: TranscribeOptions, reserved: bool = False
    ) -> Transcription:
        """Transcribe an encoded audio file (any format PyAV reads). `reserved`: the call belongs
        to work admitted as a whole (a spoken turn), so it waits its turn and is never refused."""
        self.check_options(options)
        started = time.perf_counter()
        submit = self.worker.follow_up if reserved else self.worker.run
        return self._observed(started, await submit(self._decode_and_transcribe, data, options))

    async def transcribe_audio(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        """Transcribe audio already decoded (the realtime stream's utterances)."""
        self.check_options(options)
        if audio.duration > self.settings.max_audio_seconds:
            raise AudioTooLongError(f"the audio is longer than {self.settings.max_audio_seconds:g} s")
        started = time.perf_counter()
        return self._observed(started, await self.worker.run(self._transcribe, audio, options))

    async def open_stream(
        self, data: bytes, options: TranscribeOptions
    ) -> AsyncGenerator[TranscriptSegment | Transcription, None]:
        """Each segment of an encoded file as it is decoded, then the whole transcription; opened
        after every check (options, decodable audio, the model's slot), so that a streamed route
        answers 4xx or 503 before its 200. Closing it early stops the decoding."""
        self.check_options(options)
        started = time.perf_counter()
        audio = await self.worker.run(self._decode, data)
        admission = self.worker.admit()
        return self._stream(admission.stream(self.backend.transcribe_stream, audio, options), started)

    def open_audio_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> AsyncGenerator[TranscriptSegment | Transcription, None]:
        """`open_stream` for audio already decoded (a Wyoming utterance): checked, and the model's
        slot taken (503), before the first segment is asked for."""
        self.check_options(options)
        if audio.duration > self.settings.max_audio_seconds:
            raise AudioTooLongError(f"the audio is longer than {self.settings.max_audio_seconds:g} s")
        started = time.perf_counter()
        admission = self.worker.admit()
        return self._stream(admission.stream(self._transcribe_stream, audio, options), started)

    async def _stream(
        self, items: AsyncGenerator[TranscriptSegment | Transcription, None], started: float
    ) -> AsyncGenerator[TranscriptSegment | Transcription, None]:
        async with aclosing(items):
            async for item in items:
                if isinstance(item, Transcription):
                    item = self._observed(started, item)
                yield item

    def _decode(self, data: bytes) -> Audio:
        measured_units(None)  # decoding alone says nothing of the model's speed
        return decode_audio(data, self.backend.sample_rate, self.settings.max_audio_seconds)

    def _observed(self, started: float, transcription: Transcription) -> Transcription:
        """Count a finished transcription: its time (queue wait included) and its audio (also to
        the request's API key, for its daily audio quota)."""
        self.metrics.observe_stage("stt", time.perf_counter() - started)
        self.metrics.transcribed.inc(transcription.duration)
        charge_audio("stt", transcription.duration)
        return transcription

    def _transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        measured_units(audio.duration)  # the stage's size: seconds of audio (core/admission.py)
        return self.backend.transcribe(resample(audio, self.backend.sample_rate), options)

    def _transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        measured_units(audio.duration)
        return self.backend.transcribe_stream(resample(audio, self.backend.sample_rate), options)

    def _decode_and_transcribe(self, data: bytes, options: TranscribeOptions) -> Transcription:
        audio = self._decode(data)
        measured_units(audio.duration)
        return self.backend.transcribe(audio, options)


async def text_deltas(
    items: AsyncGenerator[TranscriptSegment | Transcription, None],
) -> AsyncGenerator[tuple[str, TranscriptSegment | Transcription], None]:
    """Each streamed item with the text it adds: the deltas of the segments join up to exactly
    the final text (which joins CJK segments without a space, others with one)."""
    texts: list[str] = []
    said = ""
    async with aclosing(items):
        async for item in items:
            if isinstance(item, Transcription):
                yield item.text[len(said) :] if item.text.startswith(said) else "", item
                continue
            if item.text:
                texts.append(item.text)
            joined = join_pieces(texts)
            delta = joined[len(said) :] if joined.startswith(said) else item.text
            said = joined
            yield delta, item
