"""POST /stt: speech to text."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from backend.app.api.deps import (
    ChatServiceDep,
    SettingsDep,
    STTServiceDep,
    read_upload,
    require_multipart,
    transcribe_options,
)
from backend.app.api.schemas import ERROR_RESPONSES, SegmentOut, STTResponse, WordOut
from backend.app.api.sse import sse_event, sse_response
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import Transcription, TranscriptSegment
from backend.app.services.optimize import OptimizeMode, TranscriptOptimizer
from backend.app.services.stt import text_deltas

router = APIRouter(tags=["stt"])


@router.post(
    "/stt",
    response_model=STTResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_multipart)],
)
async def transcribe(
    stt: STTServiceDep,
    chat: ChatServiceDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="WAV, MP3, FLAC, OGG/Opus, WebM/Opus, MP4/M4A.")],
    language: Annotated[str | None, Form(description="ISO 639-1 code; omit to detect.")] = None,
    initial_prompt: Annotated[str | None, Form(max_length=2000)] = None,
    hotwords: Annotated[str | None, Form(max_length=1000)] = None,
    word_timestamps: Annotated[bool, Form()] = False,
    optimize_mode: Annotated[
        OptimizeMode | None, Form(description="Also return `optimized_text`, rewritten by the LLM.")
    ] = None,
    custom_prompt: Annotated[
        str | None, Form(description="The instruction for optimize_mode=custom.")
    ] = None,
    stream: Annotated[
        bool, Form(description="Server-Sent Events: `transcript_delta` per decoded segment, then `done`.")
    ] = False,
) -> STTResponse | Response:
    """Transcribe one audio file. Silence gives an empty text.

    With `stream=true` the transcript comes as Server-Sent Events while it is decoded: a
    `transcript_delta` event per segment (`text`, the joined text so far's new part; `start`, `end`),
    then `done` with the fields of the non-streamed answer. Bad input is still a JSON 4xx before
    the stream starts; `optimize_mode` needs the whole text, so it is refused with `stream`."""
    data = await read_upload(file, settings, "file")
    options = transcribe_options(language, initial_prompt, hotwords, word_timestamps)
    started = time.perf_counter()
    if stream:
        if optimize_mode:
            raise InvalidInputError(
                "optimize_mode needs the whole transcript; omit it or stream", param="stream"
            )
        items = await stt.open_stream(data, options)
        return sse_response(_events(items, started, word_timestamps))
    result = await stt.transcribe(data, options)
    timings = {"stt_ms": round((time.perf_counter() - started) * 1000, 1)}
    optimized = None
    if optimize_mode:
        started = time.perf_counter()
        optimized = (await TranscriptOptimizer(chat).optimize(result.text, optimize_mode, custom_prompt)).text
        timings["llm_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return _response(result, timings, word_timestamps, optimized)


def _response(
    result: Transcription, timings: dict[str, float], word_timestamps: bool, optimized: str | None = None
) -> STTResponse:
    return STTResponse(
        text=result.text,
        language=result.language,
        duration=result.duration,
        segments=[
            SegmentOut(
                start=s.start,
                end=s.end,
                text=s.text,
                words=[WordOut(**vars(w)) for w in s.words] if word_timestamps else None,
            )
            for s in result.segments
        ],
        timings=timings,
        optimized_text=optimized,
    )


async def _events(
    items: AsyncGenerator[TranscriptSegment | Transcription, None], started: float, word_timestamps: bool
) -> AsyncGenerator[bytes, None]:
    async for delta, item in text_deltas(items):
        if isinstance(item, Transcription):
            timings = {"stt_ms": round((time.perf_counter() - started) * 1000, 1)}
            body = _response(item, timings, word_timestamps).model_dump(exclude_none=True)
            yield sse_event("done", body)
        else:
            yield sse_event("transcript_delta", {"text": delta, "start": item.start, "end": item.end})
