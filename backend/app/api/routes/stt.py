"""POST /stt: speech to text."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from backend.app.api.deps import (
    ChatServiceDep,
    SettingsDep,
    STTServiceDep,
    read_upload,
    require_multipart,
    transcribe_options,
)
from backend.app.api.schemas import ERROR_RESPONSES, SegmentOut, STTResponse, WordOut
from backend.app.services.optimize import OptimizeMode, TranscriptOptimizer

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
) -> STTResponse:
    """Transcribe one audio file. Silence gives an empty text."""
    data = await read_upload(file, settings, "file")
    options = transcribe_options(language, initial_prompt, hotwords, word_timestamps)
    started = time.perf_counter()
    result = await stt.transcribe(data, options)
    timings = {"stt_ms": round((time.perf_counter() - started) * 1000, 1)}
    optimized = None
    if optimize_mode:
        started = time.perf_counter()
        optimized = (await TranscriptOptimizer(chat).optimize(result.text, optimize_mode, custom_prompt)).text
        timings["llm_ms"] = round((time.perf_counter() - started) * 1000, 1)
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
