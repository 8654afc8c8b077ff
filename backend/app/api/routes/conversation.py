"""POST /conversation (one spoken turn) and GET /outputs/{name} (its audio)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse

from backend.app.api.deps import (
    ConversationServiceDep,
    OutputStoreDep,
    SettingsDep,
    read_upload,
    require_multipart,
    transcribe_options,
)
from backend.app.api.schemas import ERROR_RESPONSES, ConversationResponse
from backend.app.audio.encode import CONTENT_TYPES, AudioFormat

router = APIRouter(tags=["conversation"])


@router.post(
    "/conversation",
    response_model=ConversationResponse,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_multipart)],
)
async def conversation(
    service: ConversationServiceDep,
    settings: SettingsDep,
    audio_file: Annotated[UploadFile, File(description="The user's speech, any common format.")],
    conversation_id: Annotated[str | None, Form()] = None,
    voice: Annotated[str | None, Form(description="A voice name from /speaker_info.")] = None,
    language: Annotated[str | None, Form(description="ISO 639-1 code; omit to detect.")] = None,
    initial_prompt: Annotated[str | None, Form(max_length=2000, description="STT context.")] = None,
    hotwords: Annotated[str | None, Form(max_length=1000, description="Words STT should favour.")] = None,
    format: Annotated[AudioFormat, Form(description="Format of the reply audio.")] = "wav",
) -> ConversationResponse:
    """Transcribe, reply and speak. The reply audio is fetched from `audio_url`.

    Silence gives an empty transcript and reply and `audio_url: null`.
    """
    data = await read_upload(audio_file, settings, "audio_file")
    turn = await service.turn(
        data,
        conversation_id=conversation_id or None,
        voice=voice or None,
        options=transcribe_options(language, initial_prompt, hotwords),
        audio_format=format,
    )
    return ConversationResponse(
        transcript=turn.transcript,
        reply=turn.reply,
        conversation_id=turn.conversation_id,
        audio_url=f"/outputs/{turn.audio_name}" if turn.audio_name else None,
        timings=turn.timings,
    )


@router.get("/outputs/{name}", responses=ERROR_RESPONSES, response_class=FileResponse)
async def output_file(name: str, outputs: OutputStoreDep) -> FileResponse:
    """A synthesised reply, by the name /conversation returned."""
    path = outputs.path(name)
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix.lstrip(".")])
