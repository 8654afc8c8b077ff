"""POST /v1/audio/transcriptions, /v1/audio/translations and /v1/audio/speech, as OpenAI's."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from backend.app.api.audio_stream import encoded
from backend.app.api.deps import (
    SettingsDep,
    STTServiceDep,
    TTSServiceDep,
    read_upload,
    require_json,
    require_multipart,
    transcribe_options,
)
from backend.app.api.v1.compat import ModelCatalog
from backend.app.api.v1.deps import CatalogDep, VoiceMapDep
from backend.app.api.v1.schemas import (
    OPENAI_ERRORS,
    DurationUsage,
    SpeechFormat,
    SpeechRequest,
    TimedSpeech,
    TranscriptFormat,
    TranscriptionOut,
    TranscriptionVerboseOut,
    TranscriptSegmentOut,
    TranscriptWord,
    VoiceList,
)
from backend.app.api.v1.streaming import openai_sse_response, sse_data
from backend.app.api.word_timings import Timeline, timed_fields
from backend.app.audio.decode import resample
from backend.app.audio.encode import CONTENT_TYPES, AudioFormat, StreamEncoder, encode_audio
from backend.app.audio.types import Audio
from backend.app.core.config import Settings
from backend.app.core.errors import (
    AudioTooLongError,
    InvalidAudioError,
    InvalidInputError,
    PayloadTooLargeError,
)
from backend.app.core.values import Transcription, TranscriptSegment
from backend.app.services.speech import SpeechStream
from backend.app.services.stt import STTService, text_deltas
from backend.app.services.tts import TTSService
from backend.app.text.languages import language_name
from backend.app.text.subtitles import to_srt, to_vtt

router = APIRouter(tags=["openai"])

PCM_RATE = 24_000
"""OpenAI's `pcm` is 24 kHz 16-bit mono; other formats keep the engine's rate (in their header)."""

SPEECH_FORMATS: dict[SpeechFormat, AudioFormat] = {
    "mp3": "mp3",
    "opus": "ogg",  # Ogg/Opus, as OpenAI sends
    "aac": "aac",
    "flac": "flac",
    "wav": "wav",
    "pcm": "pcm",
}

_TRANSCRIPT_RESPONSES: dict[int | str, dict[str, object]] = {
    **OPENAI_ERRORS,
    200: {
        "content": {"application/json": {}, "text/plain": {}, "text/vtt": {}},
        "description": "json / verbose_json as JSON; text and srt as text/plain; vtt as text/vtt.",
    },
}

Granularity = Literal["word", "segment"]


def _transcript_response(
    result: Transcription,
    task: Literal["transcribe", "translate"],
    response_format: TranscriptFormat,
    granularities: list[Granularity],
) -> Response:
    usage = DurationUsage(seconds=math.ceil(result.duration))
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.segments))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    if response_format == "json":
        body = TranscriptionOut(text=result.text, usage=usage)
        return JSONResponse(body.model_dump(exclude_none=True))
    segments = words = None
    if "segment" in granularities or not granularities:
        segments = [
            TranscriptSegmentOut(
                id=index,  # 0-based, as OpenAI's (Whisper's own ids start at 1)
                seek=s.seek,
                start=s.start,
                end=s.end,
                text=s.text,
                tokens=list(s.tokens),
                temperature=s.temperature,
                avg_logprob=s.avg_logprob,
                compression_ratio=s.compression_ratio,
                no_speech_prob=s.no_speech_prob,
            )
            for index, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        words = [
            TranscriptWord(word=w.word, start=w.start, end=w.end) for s in result.segments for w in s.words
        ]
    verbose = TranscriptionVerboseOut(
        task=task,
        language=language_name(result.language),
        duration=result.duration,
        text=result.text,
        segments=segments,
        words=words,
        usage=usage,
    )
    return JSONResponse(verbose.model_dump(exclude_none=True))


@contextmanager
def _about_the_file() -> Iterator[None]:
    """Errors about the upload name `file` as their param, as OpenAI's do."""
    try:
        yield
    except (InvalidAudioError, AudioTooLongError, PayloadTooLargeError) as e:
        e.param = "file"
        raise


async def _transcribe(
    stt: STTService,
    settings: Settings,
    catalog: ModelCatalog,
    *,
    task: Literal["transcribe", "translate"],
    file: UploadFile,
    model: str,
    language: str | None,
    prompt: str | None,
    temperature: float,
    response_format: TranscriptFormat,
    granularities: list[Granularity],
) -> Response:
    catalog.resolve(model, "stt")
    if granularities and response_format != "verbose_json":
        raise InvalidInputError(
            "timestamp_granularities is only supported with response_format=verbose_json",
            param="timestamp_granularities",
        )
    options = transcribe_options(language, prompt, word_timestamps="word" in granularities)
    options = replace(options, task=task, temperature=temperature or None)
    data = await read_upload(file, settings, "file")
    with _about_the_file():
        result = await stt.transcribe(data, options)
    return _transcript_response(result, task, response_format, granularities)


File_ = Annotated[UploadFile, File(description="The audio: wav, mp3, flac, ogg, webm, mp4, m4a, ...")]
Model = Annotated[str, Form(description="whisper-1 (or any stock name) or the STT model's id.")]
Prompt = Annotated[str | None, Form(max_length=2000, description="Text to guide the style or vocabulary.")]
Temperature = Annotated[
    float, Form(ge=0.0, le=1.0, description="0: decode with fallback to higher temperatures as needed.")
]
Format = Annotated[TranscriptFormat, Form()]


@router.post(
    "/audio/transcriptions",
    responses=_TRANSCRIPT_RESPONSES,
    response_class=Response,
    dependencies=[Depends(require_multipart)],
)
async def create_transcription(
    stt: STTServiceDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    file: File_,
    model: Model,
    language: Annotated[str | None, Form(description="ISO 639-1 code; omit to detect.")] = None,
    prompt: Prompt = None,
    temperature: Temperature = 0.0,
    response_format: Format = "json",
    timestamp_granularities: Annotated[
        list[Granularity] | None,
        Form(alias="timestamp_granularities[]", description="segment and/or word (verbose_json)."),
    ] = None,
    stream: Annotated[
        bool, Form(description="Server-Sent Events: transcript.text.delta per segment, then .done.")
    ] = False,
) -> Response:
    """Transcribe audio, as OpenAI's `audio.transcriptions.create`.

    With `stream=true` (response_format json or text) the transcript comes as OpenAI's events while
    it is decoded: `transcript.text.delta` per segment (the deltas join up to the text), then
    `transcript.text.done` with the text and usage."""
    if stream:
        catalog.resolve(model, "stt")
        if response_format not in ("json", "text"):
            raise InvalidInputError(
                "stream=true gives transcript.text events; use response_format json or text",
                param="response_format",
            )
        options = transcribe_options(language, prompt)
        options = replace(options, temperature=temperature or None)
        data = await read_upload(file, settings, "file")
        with _about_the_file():
            items = await stt.open_stream(data, options)
        return openai_sse_response(_transcript_events(items))
    return await _transcribe(
        stt,
        settings,
        catalog,
        task="transcribe",
        file=file,
        model=model,
        language=language,
        prompt=prompt,
        temperature=temperature,
        response_format=response_format,
        granularities=timestamp_granularities or [],
    )


@router.post(
    "/audio/translations",
    responses=_TRANSCRIPT_RESPONSES,
    response_class=Response,
    dependencies=[Depends(require_multipart)],
)
async def create_translation(
    stt: STTServiceDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    file: File_,
    model: Model,
    prompt: Prompt = None,
    temperature: Temperature = 0.0,
    response_format: Format = "json",
) -> Response:
    """Speech in any language to English text, as OpenAI's `audio.translations.create`. Needs a
    multilingual STT model (STT_MODEL_NAME=base-multilingual, large-v3, ...); the English-only
    embedded model transcribes English and cannot translate."""
    return await _transcribe(
        stt,
        settings,
        catalog,
        task="translate",
        file=file,
        model=model,
        language=None,
        prompt=prompt,
        temperature=temperature,
        response_format=response_format,
        granularities=[],
    )


@router.post(
    "/audio/speech",
    responses={
        **OPENAI_ERRORS,
        200: {
            "content": {**{t: {} for t in CONTENT_TYPES.values()}, "text/event-stream": {}},
            "description": "The audio bytes (or speech.audio.* events with stream_format=sse).",
        },
    },
    response_class=Response,
    dependencies=[Depends(require_json)],
)
async def create_speech(
    body: SpeechRequest, tts: TTSServiceDep, catalog: CatalogDep, voices: VoiceMapDep
) -> Response:
    """Speak `input`, as OpenAI's `audio.speech.create`.

    The audio is sent as it is synthesised, segment by segment (wav is sent whole, so that its
    header gives the length). `pcm` is 24 kHz 16-bit mono, as OpenAI's. With `stream_format=sse`,
    `speech.audio.delta` events carry base64 chunks of the encoded stream, then `speech.audio.done`;
    each piece's delta also has its `words` (`[{word, start, end}]`, seconds from the start).
    With `timestamps=true` (not OpenAI's) the answer is JSON: the audio as base64 and its `words`.
    `instructions` is accepted and has no effect on the embedded engines.
    """
    catalog.resolve(body.model, "tts")
    voice = voices.resolve(body.voice if isinstance(body.voice, str) else body.voice.id)
    speech = await open_speech(tts, body.input, voice, body.speed)
    fmt = SPEECH_FORMATS[body.response_format]
    out_rate = PCM_RATE if fmt == "pcm" else None
    if body.timestamps and body.stream_format == "audio":
        audio, data = await whole_speech(speech, fmt)
        timed = TimedSpeech.model_validate({**timed_fields(data, audio), "format": body.response_format})
        return JSONResponse(timed.model_dump())
    if fmt == "wav" and body.stream_format == "audio":
        audio, data = await whole_speech(speech, fmt)
        return Response(data, media_type=CONTENT_TYPES[fmt], headers=_speech_headers(audio.sample_rate))
    encoder = StreamEncoder(fmt, speech.sample_rate, out_rate)
    if body.stream_format == "sse":
        events = _speech_events(speech.audio(), encoder, math.ceil(len(body.input) / 4))
        return openai_sse_response(events)
    return StreamingResponse(
        encoded(speech.audio(), encoder),
        media_type=CONTENT_TYPES[fmt],
        headers=_speech_headers(encoder.out_rate),
    )


async def open_speech(tts: TTSService, text: str, voice: str | None, speed: float) -> SpeechStream:
    """`tts.speak`, its bad input named as OpenAI's `input` parameter."""
    try:
        return await tts.speak(text, voice=voice, speed=speed)
    except InvalidInputError as e:
        raise InvalidInputError(e.message, param="input") from e


async def whole_speech(speech: SpeechStream, fmt: AudioFormat) -> tuple[Audio, bytes]:
    """All the speech, and it encoded in `fmt` (`pcm` at OpenAI's 24 kHz)."""
    audio = await speech.collect()
    if fmt == "pcm":
        audio = await asyncio.to_thread(resample, audio, PCM_RATE)
    return audio, await asyncio.to_thread(encode_audio, audio, fmt)


def _speech_headers(sample_rate: int) -> dict[str, str]:
    return {"X-Sample-Rate": str(sample_rate), "Cache-Control": "no-cache"}


async def _transcript_events(
    items: AsyncGenerator[TranscriptSegment | Transcription, None],
) -> AsyncGenerator[bytes, None]:
    """OpenAI's streamed transcription: `transcript.text.delta` events, then `transcript.text.done`."""
    async for delta, item in text_deltas(items):
        if isinstance(item, Transcription):
            usage = {"type": "duration", "seconds": math.ceil(item.duration)}
            yield sse_data({"type": "transcript.text.done", "text": item.text, "usage": usage})
        elif delta:
            yield sse_data({"type": "transcript.text.delta", "delta": delta})


async def _speech_events(
    chunks: AsyncGenerator[Audio, None], encoder: StreamEncoder, input_tokens: int
) -> AsyncGenerator[bytes, None]:
    """OpenAI's speech SSE: `speech.audio.delta` events, then `speech.audio.done` with a usage
    estimate (input tokens ~ characters / 4; no output tokens). Each piece's delta also carries its
    `words` (seconds from the start of the speech), which OpenAI's clients ignore."""
    timeline = Timeline()
    async with aclosing(chunks):
        async for chunk in chunks:
            data = await asyncio.to_thread(encoder.encode, chunk)
            _, words = timeline.place(chunk)
            if data or words:
                yield sse_data(_delta(data, words))
    tail = await asyncio.to_thread(encoder.finish)
    if tail:
        yield sse_data(_delta(tail, []))
    usage = {"input_tokens": input_tokens, "output_tokens": 0, "total_tokens": input_tokens}
    yield sse_data({"type": "speech.audio.done", "usage": usage})


def _delta(data: bytes, words: list[dict[str, object]]) -> dict[str, object]:
    return {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode(), "words": words}


@router.get("/audio/voices", response_model=VoiceList, responses=OPENAI_ERRORS)
def list_voices(voices: VoiceMapDep) -> VoiceList:
    """The names /v1/audio/speech accepts as `voice`: the library's voices, and OpenAI's stock
    names with the library voice each stands for now (null: the engine's own voice)."""
    listed = voices.library.voices()
    table = voices.table(listed)
    return VoiceList(voices=[*(v.name for v in listed), *voices.engine_voices, *table], openai_voices=table)
