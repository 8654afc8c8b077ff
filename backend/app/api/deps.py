"""Dependencies for the routes: the settings and each service, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, UploadFile

from backend.app.container import ServiceGate, Services
from backend.app.core.config import Settings
from backend.app.core.errors import PayloadTooLargeError, UnsupportedMediaTypeError
from backend.app.core.values import TranscribeOptions
from backend.app.services.casts import CastService
from backend.app.services.chat import ChatService
from backend.app.services.conversation import ConversationService
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import ReplyAudioStore
from backend.app.services.stt import STTService
from backend.app.services.tts import TTSService
from backend.app.services.voices import VoiceService


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_gate(request: Request) -> ServiceGate:
    gate: ServiceGate = request.app.state.gate
    return gate


def get_services(request: Request) -> Services:
    """The services, or 503 while they load (the gate every transport asks)."""
    return get_gate(request).require()


SettingsDep = Annotated[Settings, Depends(get_settings)]
GateDep = Annotated[ServiceGate, Depends(get_gate)]
ServicesDep = Annotated[Services, Depends(get_services)]


def get_stt(services: ServicesDep) -> STTService:
    return services.stt


def get_chat(services: ServicesDep) -> ChatService:
    return services.chat


def get_tts(services: ServicesDep) -> TTSService:
    return services.tts


def get_conversation(services: ServicesDep) -> ConversationService:
    return services.conversation


def get_history(services: ServicesDep) -> ConversationHistory:
    return services.history


def get_outputs(services: ServicesDep) -> ReplyAudioStore:
    return services.history.outputs


def get_voices(services: ServicesDep) -> VoiceService:
    return services.voices


def get_casts(services: ServicesDep) -> CastService:
    return services.casts


STTServiceDep = Annotated[STTService, Depends(get_stt)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat)]
TTSServiceDep = Annotated[TTSService, Depends(get_tts)]
ConversationServiceDep = Annotated[ConversationService, Depends(get_conversation)]
HistoryDep = Annotated[ConversationHistory, Depends(get_history)]
OutputStoreDep = Annotated[ReplyAudioStore, Depends(get_outputs)]
VoiceServiceDep = Annotated[VoiceService, Depends(get_voices)]
CastServiceDep = Annotated[CastService, Depends(get_casts)]


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower-cased ("" when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_content_type(request: Request, *accepted: str) -> None:
    content_type = media_type(request)
    if content_type not in accepted:
        raise UnsupportedMediaTypeError(
            f"expected {' or '.join(accepted)}, got {content_type or 'no content type'}"
        )


def require_multipart(request: Request) -> None:
    """Routes that take an upload accept multipart/form-data only (415 otherwise)."""
    _require_content_type(request, "multipart/form-data")


def require_json(request: Request) -> None:
    _require_content_type(request, "application/json")


def _blank_to_none(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


def transcribe_options(
    language: str | None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    word_timestamps: bool = False,
) -> TranscribeOptions:
    """STT options from form fields; blank fields count as absent."""
    return TranscribeOptions(
        language=_blank_to_none(language),
        initial_prompt=_blank_to_none(initial_prompt),
        hotwords=_blank_to_none(hotwords),
        word_timestamps=word_timestamps,
    )


async def read_upload(upload: UploadFile, settings: Settings, field: str) -> bytes:
    """The uploaded file's bytes, refusing more than MAX_UPLOAD_MB with 413."""
    limit = settings.server.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLargeError(f"{field} is larger than the {settings.server.max_upload_mb:g} MB limit")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"{field} is larger than the {settings.server.max_upload_mb:g} MB limit")
    return data
