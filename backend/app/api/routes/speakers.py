"""GET /speaker_info: the voices, the default voice and the speaker cache figures."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from backend.app.api.deps import TTSServiceDep
from backend.app.api.schemas import CacheOut, SpeakerInfoResponse, VoiceOut

router = APIRouter(tags=["voices"])


@router.get("/speaker_info", response_model=SpeakerInfoResponse)
def speaker_info(tts: TTSServiceDep) -> SpeakerInfoResponse:
    """Voices parsed from `{lang}-{name}_{gender}.wav` file names in VOICES_DIR."""
    default = tts.voices.default
    return SpeakerInfoResponse(
        voices=[
            VoiceOut(file=v.file, name=v.name, language=v.language, gender=v.gender)
            for v in tts.voices.voices()
        ],
        default_voice=default.file if default else None,
        supports_cloning=tts.backend.supports_cloning,
        cache=CacheOut(**asdict(tts.cache.stats())),
    )
