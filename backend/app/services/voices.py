"""The voice library service: validated uploads and deletion of reference clips."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import numpy as np

from backend.app.audio.decode import decode_audio
from backend.app.audio.encode import encode_audio
from backend.app.audio.types import Audio
from backend.app.core.backlog import measured_units
from backend.app.core.config import VoicesSettings
from backend.app.core.errors import (
    AudioTooLongError,
    ConflictError,
    InvalidAudioError,
    InvalidInputError,
    PayloadTooLargeError,
)
from backend.app.core.worker import ModelWorker
from backend.app.voices.library import VoiceInfo, VoiceLibrary

# The fields become a file name `{language}-{name}_{gender}.wav`: letters and digits only, so the
# name parses back unambiguously and can never form a path.
_NAME_RE = re.compile(r"[^\W_]{1,40}")
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}")
_GENDER_RE = re.compile(r"[a-z]{1,16}")


@dataclass(frozen=True)
class ClipRules:
    """What makes a clip a usable reference voice."""

    min_seconds: float = 3.0
    max_seconds: float = 60.0
    min_sound_seconds: float = 1.0
    """A reference voice must hold at least this much sound (windows above SOUND_DBFS)."""


SOUND_DBFS = -40.0
"""A 30 ms window quieter than this (RMS, dB below full scale) counts as silence."""
_WINDOW_S = 0.03


def sound_seconds(audio: Audio) -> float:
    """How many seconds of `audio` are louder than SOUND_DBFS, in 30 ms windows."""
    window = max(1, int(audio.sample_rate * _WINDOW_S))
    usable = len(audio.samples) // window * window
    if not usable:
        return 0.0
    frames = audio.samples[:usable].reshape(-1, window)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return float(np.count_nonzero(rms > 10 ** (SOUND_DBFS / 20)) * window / audio.sample_rate)


class VoiceService:
    """Adds clips to the library after checking they are usable reference voices.

    Uploads are decoded on the TTS model's worker (the same bounded queue as synthesis, so parallel
    uploads cannot pile up decodes) straight to the engine's rate, and stored at that rate: a small
    upload declaring a huge rate cannot become a huge file. The library is capped in voices and bytes.
    """

    def __init__(
        self,
        library: VoiceLibrary,
        worker: ModelWorker,
        sample_rate: int,
        settings: VoicesSettings | None = None,
        clips: ClipRules | None = None,
    ) -> None:
        self.library = library
        self.worker = worker
        self.sample_rate = sample_rate
        self.settings = settings or VoicesSettings()
        self.clips = clips or ClipRules()

    @staticmethod
    def check_fields(name: str, language: str, gender: str) -> tuple[str, str, str]:
        name, language, gender = name.strip(), language.strip().lower(), gender.strip().lower()
        if not _NAME_RE.fullmatch(name):
            raise InvalidInputError("name must be 1-40 letters or digits (any script), no spaces or symbols")
        if not _LANGUAGE_RE.fullmatch(language):
            raise InvalidInputError("language must be a 2-3 letter ISO 639 code, e.g. en, zh")
        if not _GENDER_RE.fullmatch(gender):
            raise InvalidInputError("gender must be 1-16 lowercase letters, e.g. woman, man")
        return name, language, gender

    async def add(self, data: bytes, name: str, language: str, gender: str) -> VoiceInfo:
        name, language, gender = self.check_fields(name, language, gender)
        await asyncio.to_thread(lambda: self._check_room(self.library.voices(), 0))
        wav = await self.worker.run(self._prepare, data)
        return await asyncio.to_thread(
            self.library.add, language, name, gender, wav, lambda voices: self._check_room(voices, len(wav))
        )

    def _check_room(self, voices: list[VoiceInfo], adding: int) -> None:
        """409 when the library holds VOICES_MAX_COUNT voices; 413 when `adding` bytes would take
        it past VOICES_MAX_MB."""
        if len(voices) >= self.settings.max_count:
            raise ConflictError(
                f"the voice library is full ({len(voices)} voices, VOICES_MAX_COUNT); delete one first"
            )
        used = sum(v.size for v in voices)
        if used + adding > self.settings.max_bytes:
            raise PayloadTooLargeError(
                f"the voice library would pass its {self.settings.max_mb:g} MB limit "
                "(VOICES_MAX_MB); delete a voice first"
            )

    def _prepare(self, data: bytes) -> bytes:
        """Decode, check and re-encode an upload (on the worker thread)."""
        measured_units(None)  # not a synthesis: says nothing of the model's speed
        limits = self.clips
        try:
            audio = decode_audio(data, self.sample_rate, limits.max_seconds + 1)
        except AudioTooLongError as e:  # decoding stopped early: far over the limit
            raise InvalidAudioError(f"the clip is longer than {limits.max_seconds:g} s") from e
        if not limits.min_seconds <= audio.duration <= limits.max_seconds:
            raise InvalidAudioError(
                f"the clip is {_floor(audio.duration)} s; a reference voice must be "
                f"{limits.min_seconds:g}-{limits.max_seconds:g} s of speech"
            )
        if sound_seconds(audio) < limits.min_sound_seconds:
            raise InvalidAudioError(
                f"the clip is (nearly) silent: less than {limits.min_sound_seconds:g} s of it is "
                f"louder than {SOUND_DBFS:g} dBFS; a reference voice must be speech"
            )
        # Stored as 16-bit WAV whatever was uploaded: one format to read back, no container surprises.
        return encode_audio(audio, "wav")

    async def remove(self, name: str) -> VoiceInfo:
        return await asyncio.to_thread(self.library.remove, name)


def _floor(seconds: float) -> str:
    """Seconds to two decimals, rounded down: a 2.999 s clip is not reported as the 3 s it is not."""
    return f"{int(seconds * 100) / 100:.2f}"
