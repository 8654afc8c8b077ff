"""Dependencies of the OpenAI-compatible routes: the model catalog and the voice-name map."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from backend.app.api.deps import ServicesDep, SettingsDep
from backend.app.api.v1.compat import ModelCatalog, Stage, VoiceMap


def get_catalog(services: ServicesDep, settings: SettingsDep) -> ModelCatalog:
    ids: dict[Stage, str] = {
        "stt": services.stt.info.id,
        "tts": services.tts.info.id,
        "chat": services.chat.info.id,
    }
    return ModelCatalog(ids, settings.openai.model_aliases)


def get_voice_map(services: ServicesDep, settings: SettingsDep) -> VoiceMap:
    fixed = {} if services.tts.supports_cloning else services.tts.engine_voice_genders
    return VoiceMap(services.tts.voices, settings.openai.voices, fixed)


CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
VoiceMapDep = Annotated[VoiceMap, Depends(get_voice_map)]
