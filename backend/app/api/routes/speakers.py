"""The speaker library: GET /speaker_info (seed route), GET/POST /voices, DELETE /voices/{name},
and the named casts of dialogue scripts: GET /casts, PUT/GET/DELETE /casts/{name}."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from backend.app.api.deps import (
    CastServiceDep,
    SettingsDep,
    TTSServiceDep,
    VoiceServiceDep,
    read_upload,
    require_json,
    require_multipart,
)
from backend.app.api.schemas import (
    ERROR_RESPONSES,
    CacheOut,
    CastIn,
    CastListResponse,
    CastOut,
    DialogueInfo,
    ErrorResponse,
    SpeakerInfoResponse,
    VoiceListResponse,
    VoiceOut,
)
from backend.app.services.dialogue import ENGINE_VOICE_PREFIX
from backend.app.services.tts import TTSService
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


def _engine_voices(tts: TTSService) -> list[VoiceOut]:
    """The engine's own voices (the embedded pair, a multi-speaker Piper model), as `piper:<name>`."""
    genders = tts.engine_voice_genders
    return [
        VoiceOut(
            file=f"{ENGINE_VOICE_PREFIX}{name}",
            name=f"{ENGINE_VOICE_PREFIX}{name}",
            language=None,
            gender=genders.get(name) or None,
        )
        for name in tts.engine_voices
    ]


def cast_out(stored: object) -> CastOut:
    """A cast as CastService returns it (name, speakers, times), in the API's shape."""
    return CastOut.model_validate(stored, from_attributes=True)


@router.get("/speaker_info", response_model=SpeakerInfoResponse)
async def speaker_info(tts: TTSServiceDep, casts: CastServiceDep) -> SpeakerInfoResponse:
    """Voices parsed from `{lang}-{name}_{gender}.wav` (and the engine's own voices), the default
    voice, the speaker cache, how dialogue scripts are voiced, and the stored casts."""
    voices, default = await asyncio.to_thread(_listing, tts.voices)
    default_cast = await asyncio.to_thread(tts.default_cast)
    native = tts.dialogue_speakers > 0
    return SpeakerInfoResponse(
        voices=voices + _engine_voices(tts),
        default_voice=default,
        supports_cloning=tts.supports_cloning,
        cache=CacheOut(**asdict(tts.cache.stats())),
        dialogue=DialogueInfo(
            native=native,
            max_speakers_per_window=tts.dialogue_speakers if native else None,
            window_chars=tts.dialogue_window_chars if native else None,
            distinct_voices=len(default_cast) > 1,
            default_cast=default_cast,
        ),
        casts=[cast_out(c) for c in await casts.all()],
    )


@router.get("/voices", response_model=VoiceListResponse)
def list_voices(voices: VoiceServiceDep, tts: TTSServiceDep) -> VoiceListResponse:
    """Every voice in VOICES_DIR and the upload directory (and the engine's own voices)."""
    listed, default = _listing(voices.library)
    return VoiceListResponse(voices=listed + _engine_voices(tts), default_voice=default)


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


@router.get("/casts", response_model=CastListResponse)
async def list_casts(casts: CastServiceDep) -> CastListResponse:
    """The stored casts, by name."""
    return CastListResponse(casts=[cast_out(c) for c in await casts.all()])


@router.put(
    "/casts/{name}",
    response_model=CastOut,
    responses={**VOICE_ERRORS, 201: {"model": CastOut}},
    dependencies=[Depends(require_json)],
)
async def put_cast(name: str, body: CastIn, casts: CastServiceDep, response: Response) -> CastOut:
    """Store a cast (the seed's `set_speaker_voices`): each speaker label and its voice. The voices
    are checked and prepared into the speaker cache now; `/tts` then takes `"cast": "<name>"`.
    201 when new, 200 when it replaced a cast of that name."""
    stored, created = await casts.save(name, body.speakers)
    response.status_code = 201 if created else 200
    return cast_out(stored)


@router.get("/casts/{name}", response_model=CastOut, responses=VOICE_ERRORS)
async def get_cast(name: str, casts: CastServiceDep) -> CastOut:
    return cast_out(await casts.get(name))


@router.delete("/casts/{name}", response_model=CastOut, responses=VOICE_ERRORS)
async def delete_cast(name: str, casts: CastServiceDep) -> CastOut:
    """Remove a cast (its voices stay in the library)."""
    return cast_out(await casts.delete(name))
