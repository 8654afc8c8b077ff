"""POST /dev/captioned_speech: speech with word timestamps, in Kokoro-FastAPI's shape.

Clients written for Kokoro-FastAPI's captioned speech work unchanged: the same request as
/v1/audio/speech plus `stream` and `return_timestamps`, and an answer of `{"audio": base64,
"audio_format": a media type (`audio/mpeg`), "timestamps": [{"word", "start_time", "end_time"}]}`.
Streamed (the default, as Kokoro's): one such JSON object a line per piece of the speech, each
piece's audio a continuation of one encoded stream, its timestamps on the whole speech's clock.
Our own routes give the same words as `words: [{word, start, end}]` (/tts and /v1/audio/speech
with `timestamps=true`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from backend.app.api.deps import TTSServiceDep, require_json
from backend.app.api.schemas import ERROR_RESPONSES
from backend.app.api.v1.audio import PCM_RATE, SPEECH_FORMATS, open_speech, whole_speech
from backend.app.api.v1.deps import VoiceMapDep
from backend.app.api.v1.schemas import SpeechRequest
from backend.app.api.word_timings import Timeline
from backend.app.audio.encode import StreamEncoder
from backend.app.audio.types import Audio, SpokenWord

router = APIRouter(tags=["tts"])


class CaptionedSpeechRequest(SpeechRequest):
    model: str = Field("kokoro", description="Accepted and not used: the server's TTS engine speaks.")
    stream: bool = Field(True, description="One JSON object a line per piece, as each is synthesised.")
    return_timestamps: bool = Field(True, description="false: `timestamps` is empty.")
    lang_code: str | None = Field(None, description="Accepted (Kokoro's); the text's script decides.")
    voice: str = Field(
        "af_heart",
        description="A voice /v1/audio/speech accepts, or a Kokoro voice id: `af_heart` is the embedded "
        "heart; another `af_`/`am_` id takes the engine's first woman's or man's voice.",
    )


MIME_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
"""`audio_format` as Kokoro gives it: the format's media type."""

KOKORO_VOICE = re.compile(r"^[a-z]([fm])_([a-z]+)$")
"""Kokoro's voice ids: language, gender (f, m), name (`af_heart`, `bm_george`)."""


def kokoro_voice(name: str, genders: dict[str, str]) -> str:
    """A Kokoro voice id as one of the engine's voices: the one of that name (hibari's `heart` is
    Kokoro's af_heart), else the first of that gender, else the default voice (`alloy`); any
    other name as it is."""
    found = KOKORO_VOICE.match(name)
    if found is None:
        return name
    gender, voice = found.groups()
    if voice in genders:
        return voice
    wanted = "woman" if gender == "f" else "man"
    return next((engine for engine, heard_as in genders.items() if heard_as == wanted), "alloy")


class WordTimestamp(BaseModel):
    word: str
    start_time: float
    end_time: float


class CaptionedSpeechResponse(BaseModel):
    audio: str = Field(description="The audio (or, streamed, this piece's bytes of it), base64.")
    audio_format: str
    timestamps: list[WordTimestamp]


@router.post(
    "/dev/captioned_speech",
    response_model=CaptionedSpeechResponse,
    responses={**ERROR_RESPONSES, 200: {"description": "JSON; streamed, one JSON object a line per piece."}},
    dependencies=[Depends(require_json)],
)
async def captioned_speech(body: CaptionedSpeechRequest, tts: TTSServiceDep, voices: VoiceMapDep) -> Response:
    """Speak `input` and say when each word is heard (Kokoro-FastAPI's captioned speech)."""
    voice = voices.resolve(kokoro_voice(body.voice, tts.engine_voice_genders))
    speech = await open_speech(tts, body.input, voice, body.speed)
    fmt = SPEECH_FORMATS[body.response_format]
    if not body.stream:
        audio, data = await whole_speech(speech, fmt)
        answer = _answer(
            data, MIME_TYPES[body.response_format], audio.words if body.return_timestamps else ()
        )
        return JSONResponse(answer.model_dump())
    encoder = StreamEncoder(fmt, speech.sample_rate, PCM_RATE if fmt == "pcm" else None)
    lines = _lines(speech.audio(), encoder, MIME_TYPES[body.response_format], body.return_timestamps)
    return StreamingResponse(lines, media_type="application/json", headers={"Cache-Control": "no-cache"})


def _answer(
    data: bytes, audio_format: str, words: tuple[SpokenWord, ...] | list[SpokenWord] | None
) -> CaptionedSpeechResponse:
    stamps = [
        WordTimestamp(word=w.word, start_time=round(w.start, 3), end_time=round(w.end, 3))
        for w in words or ()
    ]
    return CaptionedSpeechResponse(
        audio=base64.b64encode(data).decode(), audio_format=audio_format, timestamps=stamps
    )


async def _lines(
    chunks: AsyncGenerator[Audio, None], encoder: StreamEncoder, audio_format: str, timestamps: bool
) -> AsyncGenerator[bytes, None]:
    timeline = Timeline()
    async with aclosing(chunks):
        async for chunk in chunks:
            data = await asyncio.to_thread(encoder.encode, chunk)
            start, _ = timeline.place(chunk)
            words = [w.shifted(start) for w in chunk.words or ()] if timestamps else []
            yield _line(_answer(data, audio_format, words))
    tail = await asyncio.to_thread(encoder.finish)
    if tail:
        yield _line(_answer(tail, audio_format, []))


def _line(answer: CaptionedSpeechResponse) -> bytes:
    return (json.dumps(answer.model_dump(), ensure_ascii=False) + "\n").encode()
