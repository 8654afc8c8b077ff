"""POST /tts: text to speech."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import StreamingResponse

from backend.app.api.audio_stream import encoded
from backend.app.api.deps import TTSServiceDep, require_json
from backend.app.api.schemas import ERROR_RESPONSES, TTSRequest
from backend.app.audio.encode import CONTENT_TYPES, StreamEncoder, encode_audio

router = APIRouter(tags=["tts"])


@router.post(
    "/tts",
    responses={
        **ERROR_RESPONSES,
        200: {"content": {t: {} for t in CONTENT_TYPES.values()}, "description": "The audio."},
    },
    response_class=Response,
    dependencies=[Depends(require_json)],
)
async def synthesize(body: TTSRequest, tts: TTSServiceDep) -> Response:
    """Speak `text`. Long text is synthesised in segments joined by short silences.

    Headers: `X-Segments` (segment count), `X-Sample-Rate`, `X-Voice` (the reference voice applied,
    or `builtin` when the engine has a fixed voice and does not clone).

    With `stream=true` the audio is sent segment by segment as each is synthesised (chunked
    transfer): wav as an open-ended WAV stream, pcm as bare PCM16, ogg/mp3/flac as one continuous
    stream. Playback can start after the first segment.
    """
    speech = await tts.speak(
        body.text,
        voice=body.voice,
        speaker_voice_path=body.speaker_voice_path,
        cfg_scale=body.cfg_scale,
        speed=body.speed,
    )
    headers = {
        "X-Segments": str(speech.segments),
        "X-Sample-Rate": str(speech.sample_rate),
        "X-Voice": speech.voice.file if speech.voice else "builtin",
    }
    if body.stream:
        return StreamingResponse(
            encoded(speech.audio(), StreamEncoder(body.format, speech.sample_rate)),
            media_type=CONTENT_TYPES[body.format],
            headers={**headers, "Cache-Control": "no-cache"},
        )
    audio = await speech.collect()
    data = await asyncio.to_thread(encode_audio, audio, body.format)
    return Response(
        content=data,
        media_type=CONTENT_TYPES[body.format],
        headers={**headers, "Content-Disposition": f'inline; filename="speech.{body.format}"'},
    )
