"""The TTS service: choose the voice, segment long text, synthesise and join the segments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

import numpy as np

from backend.app.audio.decode import decode_audio
from backend.app.audio.edit import change_tempo, fade_edges, trim_silence
from backend.app.audio.types import Audio
from backend.app.backends.protocols import TextToSpeech
from backend.app.core.errors import InvalidInputError, NotFoundError, TextTooLongError
from backend.app.core.metrics import ServiceMetrics, StageTimer
from backend.app.core.values import SynthesisRequest
from backend.app.core.worker import ModelWorker, raise_if_cancelled
from backend.app.text.normalize import clean_for_speech, has_speakable_content
from backend.app.text.segment import segment_text
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceInfo, VoiceLibrary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TTSSettings:
    max_chars: int
    segment_threshold_chars: int
    segment_silence_ms: int
    default_cfg_scale: float
    max_speech_seconds: float = 600.0


@dataclass(frozen=True)
class Synthesis:
    audio: Audio
    segments: int
    voice: VoiceInfo | None
    """The reference voice applied (None when the engine has a fixed voice)."""


class TTSService:
    """Text to speech over one engine, with the speaker library and its cache."""

    def __init__(
        self,
        backend: TextToSpeech,
        worker: ModelWorker,
        voices: VoiceLibrary,
        cache: SpeakerCache[object],
        settings: TTSSettings,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.voices = voices
        self.cache = cache
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()

    def prepare_text(self, text: str) -> list[str]:
        """Validate and clean `text`, and split it into segments."""
        if len(text) > self.settings.max_chars:
            raise TextTooLongError(f"text is {len(text)} characters; the limit is {self.settings.max_chars}")
        cleaned = clean_for_speech(text)
        if not has_speakable_content(cleaned):
            raise InvalidInputError("text has nothing to speak (no letters or digits)")
        return segment_text(cleaned, self.settings.segment_threshold_chars)

    def choose_voice(self, voice: str | None, speaker_voice_path: str | None) -> VoiceInfo | None:
        """The named voice (validated even when the engine cannot clone), else the default."""
        if voice:
            return self.voices.by_name(voice)
        if speaker_voice_path:
            return self.voices.by_path(speaker_voice_path)
        return self.voices.default if self.backend.supports_cloning else None

    def speaker_prompt(self, voice: VoiceInfo) -> object:
        """The engine's prepared prompt for `voice`, from the cache (keyed by the file's content)."""
        data = voice.path.read_bytes()
        return self.cache.get_or_create(
            data, lambda raw: self.backend.prepare_voice(decode_audio(raw, self.backend.sample_rate))
        )

    def preload(self, names: list[str]) -> None:
        """Prepare the default voice and `names` now, so first requests find them cached."""
        if not self.backend.supports_cloning:
            return
        default = self.voices.default
        chosen = [default] if default else []
        for name in names:
            try:
                chosen.append(self.voices.by_name(name))
            except NotFoundError:
                logger.warning("PRELOAD_VOICES names an unknown voice %r; skipped", name)
        for voice in chosen:
            self.speaker_prompt(voice)
            logger.info("voice %s prepared", voice.file)

    async def synthesize(
        self,
        text: str,
        voice: str | None = None,
        speaker_voice_path: str | None = None,
        cfg_scale: float | None = None,
        speed: float = 1.0,
    ) -> Synthesis:
        segments, chosen, cfg = await asyncio.to_thread(
            self._plan, text, voice, speaker_voice_path, cfg_scale, speed
        )
        timer = StageTimer(self.metrics, "tts_first_audio", "tts")
        return await self.worker.run(self._synthesize_segments, segments, chosen, cfg, speed, timer)

    def _plan(
        self,
        text: str,
        voice: str | None,
        speaker_voice_path: str | None,
        cfg_scale: float | None,
        speed: float = 1.0,
    ) -> tuple[list[str], VoiceInfo | None, float]:
        """A request's segments, voice and guidance, validated before any synthesis (blocking:
        run it in a thread). Text is bounded by what it will cost, the speech the engine would make
        of it, not by its characters alone: 4,000 CJK characters are 40 minutes of speech for an
        English voice that spells out each one."""
        segments = self.prepare_text(text)
        seconds = sum(self.backend.estimate_seconds(segment) for segment in segments) / speed
        if seconds > self.settings.max_speech_seconds:
            raise TextTooLongError(
                f"this text would be about {seconds:.0f} s of speech; the limit is "
                f"{self.settings.max_speech_seconds:g} s (MAX_TTS_SPEECH_SECONDS)"
            )
        chosen = self.choose_voice(voice, speaker_voice_path)
        cfg = self.settings.default_cfg_scale if cfg_scale is None else cfg_scale
        return segments, chosen, cfg

    def applied_voice(self, voice: VoiceInfo | None) -> VoiceInfo | None:
        """The voice actually imitated: None when the engine has a fixed voice."""
        return voice if self.backend.supports_cloning else None

    def iter_audio(
        self,
        segments: list[str],
        voice: VoiceInfo | None,
        cfg_scale: float,
        speed: float = 1.0,
        timer: StageTimer | None = None,
    ) -> Iterator[Audio]:
        """Synthesise segment by segment (blocking; run it on the worker). From the second segment
        on, each chunk starts with SEGMENT_SILENCE_MS of silence, so the chunks concatenate.
        `timer` (started when the request was admitted) is told of the first chunk and the end."""
        prompt = self.prompt_for(voice)
        for i, segment in enumerate(segments):
            raise_if_cancelled()
            audio = self.render(segment, prompt, cfg_scale, speed, first=i == 0, joined=len(segments) > 1)
            if timer is not None:
                timer.first()
            yield audio
        if timer is not None:
            timer.done()

    def prompt_for(self, voice: VoiceInfo | None) -> object | None:
        """The engine's prompt for `voice` (blocking on a cache miss), or None for fixed-voice engines."""
        applied = self.applied_voice(voice)
        return self.speaker_prompt(applied) if applied else None

    def render(
        self, text: str, prompt: object | None, cfg_scale: float, speed: float, *, first: bool, joined: bool
    ) -> Audio:
        """One segment's audio (blocking). A segment that is joined to others has its own silent
        edges trimmed and faded (they would add to the gap), and all but the first get the gap."""
        native = self.backend.supports_speed
        request = SynthesisRequest(text, voice=prompt, cfg_scale=cfg_scale, speed=speed if native else 1.0)
        audio = self.backend.synthesize(request)
        if not native:
            audio = change_tempo(audio, speed)
        if joined:
            audio = fade_edges(trim_silence(audio))
            if not first:
                gap = Audio.silence(self.settings.segment_silence_ms / 1000, audio.sample_rate).samples
                audio = Audio(np.concatenate([gap, audio.samples]), audio.sample_rate)
        self.metrics.synthesized.inc(audio.duration)
        return audio

    def _synthesize_segments(
        self,
        segments: list[str],
        voice: VoiceInfo | None,
        cfg_scale: float,
        speed: float,
        timer: StageTimer | None = None,
    ) -> Synthesis:
        chunks = [chunk.samples for chunk in self.iter_audio(segments, voice, cfg_scale, speed, timer)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        rate = self.backend.sample_rate
        return Synthesis(Audio(samples, rate), len(segments), self.applied_voice(voice))

    async def stream(
        self,
        text: str,
        voice: str | None = None,
        speaker_voice_path: str | None = None,
        cfg_scale: float | None = None,
        speed: float = 1.0,
    ) -> tuple[StreamedSpeech, AsyncGenerator[Audio, None]]:
        """Validate now (errors before any audio), then the chunks one segment at a time."""
        segments, chosen, cfg = await asyncio.to_thread(
            self._plan, text, voice, speaker_voice_path, cfg_scale, speed
        )
        info = StreamedSpeech(len(segments), self.backend.sample_rate, self.applied_voice(chosen))
        admission = self.worker.admit()  # 503 now, before the 200; the slot is kept for the stream
        timer = StageTimer(self.metrics, "tts_first_audio", "tts")
        return info, admission.stream(self.iter_audio, segments, chosen, cfg, speed, timer)

    def sentence_speaker(self, voice: str | None) -> SentenceSpeaker:
        """A speaker for a reply that arrives sentence by sentence (see SentenceSpeaker)."""
        return SentenceSpeaker(self, self.choose_voice(voice, None))


@dataclass(frozen=True)
class StreamedSpeech:
    segments: int
    sample_rate: int
    voice: VoiceInfo | None


class SentenceSpeaker:
    """Speaks a streamed reply piece by piece, each piece joined to the previous by the usual gap.

    Each piece is one call on the TTS worker, so pieces of concurrent replies interleave fairly.
    The caller admits the whole reply up front (`TTSService.worker.check`); pieces are follow-ups
    and are never refused half-way through a reply.
    """

    def __init__(self, service: TTSService, voice: VoiceInfo | None) -> None:
        self.service = service
        self.voice = service.applied_voice(voice)
        self.sample_rate = service.backend.sample_rate
        self._prompt: object | None = None
        self._spoken = 0

    def _speak(self, segments: list[str], cfg_scale: float) -> Audio:
        if self.voice is not None and self._prompt is None:
            self._prompt = self.service.prompt_for(self.voice)
        chunks = []
        for segment in segments:
            first = self._spoken == 0
            audio = self.service.render(segment, self._prompt, cfg_scale, 1.0, first=first, joined=True)
            chunks.append(audio)
            self._spoken += 1
        return Audio(np.concatenate([c.samples for c in chunks]), self.sample_rate)

    async def speak(self, text: str) -> Audio | None:
        """The audio of one more piece of the reply; None when it has nothing speakable."""
        cleaned = clean_for_speech(text)
        if not has_speakable_content(cleaned):
            return None
        segments = segment_text(cleaned, self.service.settings.segment_threshold_chars)
        cfg = self.service.settings.default_cfg_scale
        return await self.service.worker.follow_up(self._speak, segments, cfg)
