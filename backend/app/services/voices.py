"""The voice library service: validated uploads and deletion of reference clips."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from backend.app.audio.decode import decode_audio
from backend.app.audio.encode import encode_audio
from backend.app.core.errors import InvalidAudioError, InvalidInputError, PayloadTooLargeError
from backend.app.voices.library import VoiceInfo, VoiceLibrary

# The fields become a file name `{language}-{name}_{gender}.wav`: letters and digits only, so the
# name parses back unambiguously and can never form a path.
_NAME_RE = re.compile(r"^[^\W_]{1,40}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")
_GENDER_RE = re.compile(r"^[a-z]{1,16}$")


@dataclass(frozen=True)
class VoiceLimits:
    min_seconds: float = 3.0
    max_seconds: float = 60.0


class VoiceService:
    """Adds clips to the library after checking they are usable reference voices."""

    def __init__(self, library: VoiceLibrary, limits: VoiceLimits | None = None) -> None:
        self.library = library
        self.limits = limits or VoiceLimits()

    @staticmethod
    def check_fields(name: str, language: str, gender: str) -> tuple[str, str, str]:
        name, language, gender = name.strip(), language.strip().lower(), gender.strip().lower()
        if not _NAME_RE.match(name):
            raise InvalidInputError("name must be 1-40 letters or digits (any script), no spaces or symbols")
        if not _LANGUAGE_RE.match(language):
            raise InvalidInputError("language must be a 2-3 letter ISO 639 code, e.g. en, zh")
        if not _GENDER_RE.match(gender):
            raise InvalidInputError("gender must be 1-16 lowercase letters, e.g. woman, man")
        return name, language, gender

    async def add(self, data: bytes, name: str, language: str, gender: str) -> VoiceInfo:
        name, language, gender = self.check_fields(name, language, gender)
        limits = self.limits
        try:
            audio = await asyncio.to_thread(decode_audio, data, None, limits.max_seconds + 1)
        except PayloadTooLargeError as e:  # decoding stopped early: far over the limit
            raise InvalidAudioError(f"the clip is longer than {limits.max_seconds:g} s") from e
        if not limits.min_seconds <= audio.duration <= limits.max_seconds:
            raise InvalidAudioError(
                f"the clip is {audio.duration:.1f} s; a reference voice must be "
                f"{limits.min_seconds:g}-{limits.max_seconds:g} s of speech"
            )
        # Stored as 16-bit WAV whatever was uploaded: one format to read back, no container surprises.
        wav = await asyncio.to_thread(encode_audio, audio, "wav")
        return await asyncio.to_thread(self.library.add, language, name, gender, wav)

    async def remove(self, name: str) -> VoiceInfo:
        return await asyncio.to_thread(self.library.remove, name)
