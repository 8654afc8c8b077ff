"""The speaker library: GET /speaker_info (seed route), GET/POST /voices, DELETE /voices/{name}."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from backend.app.api.deps import SettingsDep, TTSServiceDep, VoiceServiceDep, read_upload, require_multipart
from backend.app.api.schemas import (
    ERROR_RESPONSES,
    CacheOut,
    ErrorResponse,
    SpeakerInfoResponse,
    VoiceListResponse,
    VoiceOut,
)
from backend.app.voices.library import VoiceInfo, VoiceLibrary

router = APIRouter(tags=["voices"])
VOICE_ERRORS: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
}


def voice_out(voice: VoiceInfo) -> VoiceOut:
    duration, sample_rate = voice.header
    return VoiceOut(
        file=voice.file,
        name=voice.name,
        language=voice.language,
        gender=voice.gender,
        duration=duration,
        sample_rate=sample_rate,
        deletable=voice.deletable,
    )


def _listing(library: VoiceLibrary) -> tuple[list[VoiceOut], str | None]:
    voices = library.voices()
    default = library.default_among(voices)
    return [voice_out(v) for v in voices], default.file if default else None


@router.get("/speaker_info", response_model=SpeakerInfoResponse)
def speaker_info(tts: TTSServiceDep) -> SpeakerInfoResponse:
    """Voices parsed from `{lang}-{name}_{gender}.wav`, the default voice, and the speaker cache."""
    voices, default = _listing(tts.voices)
    return SpeakerInfoResponse(
        voices=voices,
        default_voice=default,
        supports_cloning=tts.backend.supports_cloning,
        cache=CacheOut(**asdict(tts.cache.stats())),
    )


@router.get("/voices", response_model=VoiceListResponse)
def list_voices(voices: VoiceServiceDep) -> VoiceListResponse:
    """Every voice in VOICES_DIR and the upload directory."""
    listed, default = _listing(voices.library)
    return VoiceListResponse(voices=listed, default_voice=default)


@router.post(
    "/voices",
    response_model=VoiceOut,
    status_code=201,
    responses=VOICE_ERRORS,
    dependencies=[Depends(require_multipart)],
)
async def add_voice(
    voices: VoiceServiceDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="3-60 s of clean speech, any common audio format.")],
    name: Annotated[str, Form(description="Letters and digits, e.g. Xinran.")],
    language: Annotated[str, Form(description="ISO 639 code, e.g. zh.")],
    gender: Annotated[str, Form(description="e.g. woman, man.")],
) -> VoiceOut:
    """Add a reference voice. It is stored as `{language}-{name}_{gender}.wav` (16-bit WAV)."""
    data = await read_upload(file, settings, "file")
    return voice_out(await voices.add(data, name, language, gender))


@router.delete("/voices/{name}", response_model=VoiceOut, responses=VOICE_ERRORS)
async def delete_voice(name: str, voices: VoiceServiceDep) -> VoiceOut:
    """Remove a voice by name; voices in a read-only VOICES_DIR cannot be removed (403)."""
    removed = await voices.remove(name)
    return VoiceOut(file=removed.file, name=removed.name, language=removed.language, gender=removed.gender)
