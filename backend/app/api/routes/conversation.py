"""POST /conversation (one spoken turn) and GET /outputs/{name} (its audio)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse, Response

from backend.app.api.deps import (
    ConversationServiceDep,
    OutputStoreDep,
    SettingsDep,
    read_upload,
    require_multipart,
    transcribe_options,
)
from backend.app.api.schemas import ERROR_RESPONSES, ConversationResponse, ToolStepOut
from backend.app.api.sse import sse_event, sse_response
from backend.app.api.word_timings import Timeline
from backend.app.audio.encode import CONTENT_TYPES, AudioFormat, encode_audio
from backend.app.services.conversation import collect
from backend.app.services.speech import ReplyAudio, ReplyText
from backend.app.services.turn_events import Heard, TurnStream

router = APIRouter(tags=["conversation"])


@router.post(
    "/conversation",
    response_model=ConversationResponse,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "The turn (JSON, or SSE with stream)."},
    },
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
    stream: Annotated[bool, Form(description="Answer Server-Sent Events as the reply is made.")] = False,
) -> ConversationResponse | Response:
    """Transcribe, reply and speak. The reply audio is fetched from `audio_url`.

    Silence gives an empty transcript and reply and `audio_url: null`.

    With `stream=true` the answer is Server-Sent Events, in order: `transcript` (`{"text",
    "language", "conversation_id"}`), `reply_delta` (`{"text"}`) and `audio` (`{"index", "text", "format",
    "sample_rate", "start", "words", "audio"}`: one base64 file in `format` per piece of the reply,
    spoken while the rest is still being generated; `words` are `[{word, start, end}]` in seconds
    from the start of the reply's audio, `start` the piece's own) interleaved, then `done` (the
    non-streamed response's fields, with `timings` incl. `first_audio_ms`), or `error`.
    """
    data = await read_upload(audio_file, settings, "audio_file")
    turn_stream = await service.begin_turn(
        data,
        conversation_id=conversation_id or None,
        voice=voice or None,
        options=transcribe_options(language, initial_prompt, hotwords),
        audio_format=format,
    )
    if stream:
        return sse_response(_turn_events(turn_stream, format))
    turn = await collect(turn_stream)
    return ConversationResponse(
        transcript=turn.transcript,
        reply=turn.reply,
        conversation_id=turn.conversation_id,
        audio_url=f"/outputs/{turn.audio_name}" if turn.audio_name else None,
        timings=turn.timings,
        tools=[ToolStepOut.model_validate(step) for step in turn.tools],
    )


async def _turn_events(turn: TurnStream, audio_format: AudioFormat) -> AsyncGenerator[bytes, None]:
    transcription = turn.transcription
    transcript = {"text": transcription.text, "language": transcription.language}
    yield sse_event("transcript", {**transcript, "conversation_id": turn.conversation_id})
    timeline = Timeline()
    async with aclosing(turn.events) as events:
        async for event in events:
            if isinstance(event, Heard):
                continue  # the transcript went out first
            if isinstance(event, ReplyText):
                yield sse_event("reply_delta", {"text": event.text})
            elif isinstance(event, ReplyAudio):
                data = await asyncio.to_thread(encode_audio, event.audio, audio_format)
                start, words = timeline.place(event.audio)
                yield sse_event(
                    "audio",
                    {
                        "index": event.index,
                        "text": event.text,
                        "format": audio_format,
                        "sample_rate": event.audio.sample_rate,
                        "start": start,
                        "words": words,
                        "audio": base64.b64encode(data).decode("ascii"),
                    },
                )
            else:
                yield sse_event(
                    "done",
                    {
                        "transcript": event.transcript,
                        "reply": event.reply,
                        "conversation_id": event.conversation_id,
                        "audio_url": f"/outputs/{event.audio_name}" if event.audio_name else None,
                        "timings": event.timings,
                        "tools": list(event.tools),
                    },
                )


@router.get("/outputs/{name}", responses=ERROR_RESPONSES, response_class=FileResponse)
async def output_file(name: str, outputs: OutputStoreDep) -> Response:
    """A synthesised reply, by the name /conversation returned (from OUTPUTS_DIR, or from the
    shared database with DATABASE_URL)."""
    found = await asyncio.to_thread(outputs.fetch, name)
    media_type = CONTENT_TYPES[name.rsplit(".", 1)[-1]]
    if isinstance(found, bytes):
        return Response(found, media_type=media_type)
    return FileResponse(found, media_type=media_type)
