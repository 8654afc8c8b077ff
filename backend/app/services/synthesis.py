"""The engine side of speech: what a `SpeechStream` (services/speech.py) is handed to make audio.

A `Synthesizer` is built by `TTSService` for each stream, from the service's engine, worker, speaker
cache, settings and metrics; the stream sees only this narrow surface (it satisfies the stream's
`speech.Renderer`), never the service: text into pieces (`chunker`, `segments`), a voice's prompt
(`prompt_for`), one segment's or one window's audio (`render`, `render_window`, blocking), running
that on the TTS worker (`deadline`, `on_worker`), and the stage timings it reports
(`observe_stage`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import cast

from backend.app.audio.decode import decode_audio
from backend.app.audio.edit import change_tempo, fade_edges, trim_silence
from backend.app.audio.types import Audio
from backend.app.backends.by_language import check_spoken
from backend.app.backends.protocols import DialogueSpeech, TextToSpeech, WordAligner
from backend.app.core.backlog import measured_units
from backend.app.core.config import TTSSettings
from backend.app.core.errors import StageTimeoutError
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.values import DialogueLine, DialogueRequest, SynthesisRequest
from backend.app.core.worker import Admission, ModelWorker
from backend.app.services.dialogue import WindowTurn
from backend.app.text.normalize import clean_for_speech, has_speakable_content
from backend.app.text.segment import SentenceChunker, segment_text
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceInfo

logger = logging.getLogger(__name__)


class Synthesizer:
    """One engine's synthesis, on its worker: segments, prompts and audio, nothing of the requests."""

    def __init__(
        self,
        backend: TextToSpeech,
        worker: ModelWorker,
        cache: SpeakerCache[object],
        settings: TTSSettings,
        metrics: ServiceMetrics,
        aligner: WordAligner | None = None,
    ) -> None:
        self._backend = backend
        self._aligner = aligner
        self._worker = worker
        self._cache = cache
        self._settings = settings
        self._metrics = metrics

    @property
    def sample_rate(self) -> int:
        return self._backend.sample_rate

    def chunker(self) -> SentenceChunker:
        """The sentence chunker for text that streams in, cut to the segment length."""
        return SentenceChunker(max_chars=self._settings.segment_threshold_chars)

    def segments(self, piece: str) -> list[str]:
        """Text cleaned for speech and segmented ([] when it has nothing speakable)."""
        cleaned = clean_for_speech(piece)
        if not has_speakable_content(cleaned):
            return []
        segments = segment_text(cleaned, self._settings.segment_threshold_chars)
        for segment in segments:
            check_spoken(segment, getattr(self._backend, "languages", ()))
        return segments

    def speaker_prompt(self, voice: VoiceInfo) -> object:
        """The engine's prepared prompt for `voice`, from the cache (keyed by the file's content)."""
        data = voice.path.read_bytes()
        return self._cache.get_or_create(
            data, lambda raw: self._backend.prepare_voice(decode_audio(raw, self._backend.sample_rate))
        )

    def applied_voice(self, voice: VoiceInfo | None) -> VoiceInfo | None:
        """The voice actually imitated: None when the engine has a fixed voice."""
        return voice if self._backend.supports_cloning else None

    def prompt_for(self, voice: VoiceInfo | None) -> object | None:
        """The engine's prompt for `voice` (blocking on a cache miss), or None for fixed-voice engines."""
        applied = self.applied_voice(voice)
        return self.speaker_prompt(applied) if applied else None

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
    ) -> Audio:
        """One segment's audio (blocking). A segment that is joined to others has its own silent
        edges trimmed and faded (they would add to the gap), and all but the first get the gap."""
        native = self._backend.supports_speed
        request = SynthesisRequest(
            text, voice=prompt, cfg_scale=cfg_scale, speed=speed if native else 1.0, speaker=speaker
        )
        audio = self._timed(self._backend.synthesize(request), text)
        measured_units(audio.duration)  # the stage's size: seconds of speech (core/admission.py)
        if not native:
            audio = change_tempo(audio, speed)
        return self._joined(audio, first=first) if joined else self._counted(audio)

    def render_window(
        self,
        window: tuple[WindowTurn, ...],
        prompts: Mapping[str, object | None],
        cfg_scale: float,
        speed: float,
        *,
        first: bool,
    ) -> Audio:
        """One window of a script in one generation (blocking): roles 0, 1, ... are its speakers in
        order of first appearance, each with its prompt."""
        roles = {speaker: role for role, speaker in enumerate(dict.fromkeys(t.speaker for t in window))}
        request = DialogueRequest(
            lines=tuple(DialogueLine(roles[t.speaker], t.text) for t in window),
            voices=tuple(prompts[speaker] for speaker in roles),
            cfg_scale=cfg_scale,
        )
        text = "\n".join(t.text for t in window)
        audio = self._timed(cast(DialogueSpeech, self._backend).synthesize_dialogue(request), text)
        measured_units(audio.duration)
        if not self._backend.supports_speed:
            audio = change_tempo(audio, speed)
        return self._joined(audio, first=first)

    def deadline(self) -> float | None:
        """When work admitted now must be done (TTS_TIMEOUT_S on the running loop's clock; None:
        unbounded)."""
        timeout = self._worker.timeout_s
        return None if timeout is None else asyncio.get_running_loop().time() + timeout

    async def on_worker(
        self, render: Callable[[], Audio], admission: Admission | None, deadline: float | None
    ) -> Audio:
        """`render()` on the TTS worker: a step of `admission`, done by `deadline` (504 past it),
        or without one a follow-up of work admitted as a whole elsewhere (never refused)."""
        if admission is None:
            return await self._worker.follow_up(render)
        try:
            async with asyncio.timeout_at(deadline):
                return await admission.step(render)
        except TimeoutError:
            raise StageTimeoutError(self._worker.name, self._worker.timeout_s or 0) from None

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._metrics.observe_stage(stage, seconds)

    def _joined(self, audio: Audio, *, first: bool) -> Audio:
        """`audio` with its silent edges trimmed and faded, after the gap unless it comes first."""
        audio = fade_edges(trim_silence(audio))
        if not first:
            audio = Audio.join(
                [Audio.silence(self._settings.segment_silence_ms / 1000, audio.sample_rate), audio]
            )
        return self._counted(audio)

    def _timed(self, audio: Audio, text: str) -> Audio:
        """`audio` with its words' times: the engine's own, else found by the aligner (forced
        alignment of the text on the speech by the STT model; TTS_ALIGN_WORDS), else left unknown.
        An alignment that fails leaves them unknown: the speech is never lost for its timings."""
        if audio.words is not None or self._aligner is None or not self._settings.align_words:
            return audio
        try:
            words = self._aligner.align(audio, text)
        except Exception:
            logger.warning("word alignment failed; this piece's words are left untimed", exc_info=True)
            return audio
        return Audio(audio.samples, audio.sample_rate, words)

    def _counted(self, audio: Audio) -> Audio:
        self._metrics.synthesized.inc(audio.duration)
        return audio
