"""POST /tts: text (or a dialogue script) to speech."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from contextlib import aclosing
from urllib.parse import quote

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, StreamingResponse

from backend.app.api.audio_stream import encoded
from backend.app.api.deps import CastServiceDep, TTSServiceDep, require_json
from backend.app.api.schemas import ERROR_RESPONSES, TimedSpeechResponse, TTSRequest
from backend.app.api.sse import sse_event, sse_response
from backend.app.api.word_timings import Timeline, timed_fields
from backend.app.audio.encode import CONTENT_TYPES, AudioFormat, StreamEncoder, encode_audio
from backend.app.services.dialogue import ENGINE_VOICE_PREFIX
from backend.app.services.speech import ReplyAudio, SpeechStream
from backend.app.text.script import Script, speaker_key
from backend.app.text.subtitles import captions

router = APIRouter(tags=["tts"])


@router.post(
    "/tts",
    responses={
        **ERROR_RESPONSES,
        200: {
            "content": {
                **{t: {} for t in CONTENT_TYPES.values()},
                "text/event-stream": {},
                "application/json": {"schema": TimedSpeechResponse.model_json_schema()},
            },
            "description": "The audio (with stream_format=sse, its pieces as events; with timestamps "
            "or captions, JSON with the audio and its words).",
        },
    },
    response_class=Response,
    dependencies=[Depends(require_json)],
)
async def synthesize(body: TTSRequest, tts: TTSServiceDep, casts: CastServiceDep) -> Response:
    """Speak `text`, or a dialogue `script`. Long text is synthesised in segments joined by short
    silences; a script turn by turn (each speaker in its voice), or, with VibeVoice, in windows of
    whole turns that each voice up to four speakers in one generation.

    Headers: `X-Segments` (synthesis calls: segments, or windows), `X-Sample-Rate`, `X-Voice`
    (the reference voice applied, or `builtin` when the engine has a fixed voice, or `cast` for a
    script). A script adds `X-Turns`, `X-Speakers` (`label=voice` pairs, percent-encoded, comma
    separated) and `X-Shared-Voice` (`true` when every speaker is heard in the engine's one voice).

    With `stream=true` the audio is sent piece by piece as each is synthesised (chunked transfer):
    wav as an open-ended WAV stream, pcm as bare PCM16, ogg/mp3/flac as one continuous stream; or,
    with `stream_format=sse`, one `audio` event per piece with its index, turns and speakers, and
    its `words` (`[{word, start, end}]`, seconds from the start of the whole speech; `start` is the
    piece's own).

    With `timestamps=true` the answer is JSON: the audio as base64 and `words`, where each word of
    the text is heard; `captions=srt|vtt` adds SubRip or WebVTT captions of them.
    """
    script: Script | None
    mapping: dict[str, str] = {}
    if body.cast:
        mapping.update((await casts.get(body.cast)).speakers)
    mapping.update(body.speakers or {})
    if body.script is not None:
        items = [(str(turn.speaker), turn.text) for turn in body.script]
        script = await asyncio.to_thread(tts.check_script, items)
    else:
        assert body.text is not None
        known = {speaker_key(label) for label in mapping if label.strip()}
        script = await asyncio.to_thread(tts.parse_script, body.text, known, body.dialogue)
    if script is not None:
        speech = await tts.speak_script(script, mapping, cfg_scale=body.cfg_scale, speed=body.speed)
    else:
        assert body.text is not None
        speech = await tts.speak(
            body.text,
            voice=body.voice,
            speaker_voice_path=body.speaker_voice_path,
            cfg_scale=body.cfg_scale,
            speed=body.speed,
        )
    headers = _headers(speech)
    if body.stream and body.stream_format == "sse":
        return sse_response(_events(speech, body.format))
    if body.stream:
        return StreamingResponse(
            encoded(speech.audio(), StreamEncoder(body.format, speech.sample_rate)),
            media_type=CONTENT_TYPES[body.format],
            headers={**headers, "Cache-Control": "no-cache"},
        )
    audio = await speech.collect()
    data = await asyncio.to_thread(encode_audio, audio, body.format)
    if body.timestamps or body.captions:
        timed = TimedSpeechResponse.model_validate(
            {
                **timed_fields(data, audio),
                "format": body.format,
                "captions": captions(audio.words or (), body.captions) if body.captions else None,
            }
        )
        return JSONResponse(timed.model_dump(), headers=headers)
    return Response(
        content=data,
        media_type=CONTENT_TYPES[body.format],
        headers={**headers, "Content-Disposition": f'inline; filename="speech.{body.format}"'},
    )


def _headers(speech: SpeechStream) -> dict[str, str]:
    headers = {"X-Segments": str(speech.segments), "X-Sample-Rate": str(speech.sample_rate)}
    if speech.cast is None:
        applied = speech.voice.file if speech.voice else "builtin"
        if speech.engine_voice:
            applied = ENGINE_VOICE_PREFIX + speech.engine_voice
        return {**headers, "X-Voice": quote(applied)}
    members = speech.cast.members.values()
    return {
        **headers,
        "X-Voice": "cast",
        "X-Turns": str(speech.turns),
        "X-Speakers": ",".join(f"{quote(m.label, safe='')}={quote(m.applied, safe='')}" for m in members),
        "X-Shared-Voice": "true" if speech.cast.shared_voice else "false",
    }


async def _events(speech: SpeechStream, audio_format: AudioFormat) -> AsyncGenerator[bytes, None]:
    """An `audio` event per piece (a whole file in `audio_format`), then `done`."""
    pieces = 0
    timeline = Timeline()
    async with aclosing(speech):
        async for event in speech:
            if not isinstance(event, ReplyAudio):
                continue
            data = await asyncio.to_thread(encode_audio, event.audio, audio_format)
            start, words = timeline.place(event.audio)
            pieces += 1
            yield sse_event(
                "audio",
                {
                    "index": event.index,
                    "text": event.text,
                    "turns": list(event.turns),
                    "speakers": list(event.speakers),
                    "format": audio_format,
                    "sample_rate": event.audio.sample_rate,
                    "duration": round(event.audio.duration, 3),
                    "start": start,
                    "words": words,
                    "audio": base64.b64encode(data).decode("ascii"),
                },
            )
    done: dict[str, object] = {"pieces": pieces, "segments": speech.segments}
    if speech.cast is not None:
        done["turns"] = speech.turns
        done["speakers"] = {m.label: m.applied for m in speech.cast.members.values()}
        done["shared_voice"] = speech.cast.shared_voice
    yield sse_event("done", done)
