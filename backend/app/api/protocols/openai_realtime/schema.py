"""OpenAI's Realtime protocol, the fields: what `session.update`, `response.create` and
`conversation.item.create` may carry (checked strictly: a misspelt field is an error, as
OpenAI's), the session's initial state, and the audio formats."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.app.api.protocols.wire_audio import PCMA, PCMU, WireEncoder, WireFormat
from backend.app.api.word_timings import words_json
from backend.app.audio.g711 import G711_RATE
from backend.app.core.config import VADSettings
from backend.app.services.realtime.config import SessionError
from backend.app.services.speech import ReplyAudio

OUTPUT_RATE = 24000
"""The Realtime protocol's PCM rate, both ways."""

INPUT_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""PCM rates accepted for input: OpenAI's 24 kHz, and the usual others."""

AUDIO_DELTA_S = 0.2
"""Reply audio goes out in `response.output_audio.delta` events of this much audio."""

MAX_INSTRUCTIONS_CHARS = 32_768

EAGERNESS = {"low": (0.8, 8000), "medium": (0.5, 4000), "high": (0.25, 2000)}
"""semantic_vad's eagerness, as (the end-of-turn model's threshold, the silence that ends a turn
whatever it says): `low` lets the user take their time, `high` answers sooner (OpenAI's own
ceilings are 8, 4 and 2 s). `auto` is the server's TURN_THRESHOLD and TURN_MAX_SILENCE_MS."""

Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


# --- the client's session fields (what `session.update` may set) ------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioFormat(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class _Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    languages: list[str] | None = None
    keywords: list[str] | None = None
    delay: str | None = None


class _TurnDetection(_Strict):
    type: Literal["server_vad", "semantic_vad"]
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=2000)
    silence_duration_ms: int | None = Field(None, ge=64, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class _NoiseReduction(_Strict):
    type: str | None = None
    strength: float | None = None


class _Input(_Strict):
    format: AudioFormat | None = None
    transcription: _Transcription | None = None
    turn_detection: _TurnDetection | None = None
    noise_reduction: _NoiseReduction | None = None


class VoiceId(_Strict):
    id: str


class _Output(_Strict):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: float | None = Field(None, ge=0.25, le=1.5)


class _Audio(_Strict):
    input: _Input | None = None
    output: _Output | None = None


class SessionFields(_Strict):
    """A `session.update`'s session: the fields we act on, and those we accept and ignore."""

    type: Literal["realtime", "transcription"] | None = None
    model: str | None = None
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    output_modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1)
    audio: _Audio | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Accepted and ignored (a client may echo the whole session back):
    id: str | None = None
    object: str | None = None
    expires_at: int | None = None
    include: list[str] | None = None
    tracing: Any = None
    truncation: Any = None
    prompt: Any = None
    reasoning: Any = None
    parallel_tool_calls: bool | None = None
    client_secret: Any = None


class _ResponseOutput(_Strict):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None


class _ResponseAudio(_Strict):
    output: _ResponseOutput | None = None


class ResponseFields(_Strict):
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    output_modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1)
    audio: _ResponseAudio | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None
    conversation: str | None = None
    input: list[Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Accepted and ignored:
    prompt: Any = None
    reasoning: Any = None
    parallel_tool_calls: bool | None = None


class _Content(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["input_text", "input_audio", "input_image", "text", "output_text", "output_audio"]
    text: str | None = None


class ItemFields(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    id: str | None = Field(None, max_length=64)
    role: str | None = None
    content: Annotated[list[_Content], Field(max_length=64)] | None = None


def validation_problem(error: ValidationError, prefix: str) -> SessionError:
    """A pydantic error as OpenAI words it: the first problem, with its parameter's path."""
    first = error.errors()[0]
    param = ".".join([prefix, *(str(part) for part in first["loc"])])
    if first["type"] == "extra_forbidden":
        return SessionError(f"Unknown parameter: '{param}'.", "unknown_parameter", param)
    if first["type"] == "missing":
        return SessionError(f"Missing required parameter: '{param}'.", "missing_required_parameter", param)
    return SessionError(f"Invalid value for '{param}': {first['msg']}.", "invalid_value", param)


def checked_max_tokens(value: int | str | None, param: str) -> int | None:
    if value is None or value == "inf":
        return None
    if isinstance(value, int) and 1 <= value <= 4096:
        return value
    raise SessionError(
        f"Invalid value for '{param}': an integer from 1 to 4096, or 'inf'.", "invalid_value", param
    )


def voice_name(voice: str | VoiceId | dict[str, Any] | None) -> str | None:
    """A voice as a name: OpenAI's `{"id": ...}` form or a plain string."""
    if isinstance(voice, VoiceId):
        return voice.id
    if isinstance(voice, dict):
        found = voice.get("id")
        return found if isinstance(found, str) else None
    return voice


def turn_settings(detection: dict[str, Any], defaults: VADSettings) -> VADSettings:
    """A session's `turn_detection` as the VAD's settings: `server_vad` ends turns by silence
    (`silence_duration_ms`), `semantic_vad` by the end-of-turn model (`eagerness`)."""
    update: dict[str, Any] = {
        "turn_detection": "silence" if detection["type"] == "server_vad" else "semantic"
    }
    for key, field in (
        ("threshold", "threshold"),
        ("prefix_padding_ms", "speech_pad_ms"),
        ("silence_duration_ms", "min_silence_ms"),
    ):
        if detection.get(key) is not None:
            update[field] = detection[key]
    eagerness = detection.get("eagerness") or "auto"
    if detection["type"] == "semantic_vad" and eagerness in EAGERNESS:
        update["turn_threshold"], update["turn_max_silence_ms"] = EAGERNESS[eagerness]
    return defaults.model_copy(update=update)


def initial_state(model: str, transcription_only: bool, vad: VADSettings) -> dict[str, Any]:
    detection: dict[str, Any] = {
        "type": "server_vad",
        "threshold": vad.threshold,
        "prefix_padding_ms": vad.speech_pad_ms,
        "silence_duration_ms": vad.min_silence_ms,
        "idle_timeout_ms": None,
    }
    if vad.turn_detection == "semantic":  # the server's default turns, in OpenAI's words
        detection = {"type": "semantic_vad", "eagerness": "auto"}
    detection |= {"create_response": not transcription_only, "interrupt_response": not transcription_only}
    audio_in = {
        "format": {"type": "audio/pcm", "rate": OUTPUT_RATE},
        "transcription": {"model": model or "whisper-1", "language": None, "prompt": None}
        if transcription_only
        else None,
        "noise_reduction": None,
        "turn_detection": detection,
    }
    if transcription_only:
        return {
            "type": "transcription",
            "id": new_id("sess"),
            "object": "realtime.transcription_session",
            "audio": {"input": audio_in, "output": {}},
            "include": None,
        }
    return {
        "type": "realtime",
        "id": new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": audio_in,
            "output": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE}, "voice": "alloy", "speed": 1.0},
        },
        "max_output_tokens": "inf",
        "tools": [],
        "tool_choice": "auto",
        "tracing": None,
        "truncation": "auto",
        "include": None,
    }


def merged(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` laid over `state`, object by object (a None replaces; turn detection and
    transcription objects are replaced whole, as OpenAI does)."""
    out = dict(state)
    for key, value in update.items():
        whole = key in ("turn_detection", "transcription", "format", "voice")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not whole:
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def speaks(modalities: Sequence[str] | None) -> bool:
    return modalities is None or "audio" in modalities


def _format(value: dict[str, Any] | AudioFormat | None) -> tuple[str, Any]:
    if isinstance(value, AudioFormat):
        value = value.model_dump(exclude_none=True)
    value = value or {}
    return str(value.get("type") or "audio/pcm"), value.get("rate")


def check_input_format(value: dict[str, Any] | AudioFormat | None, param: str) -> WireFormat:
    """The input audio's format: PCM16 at one of INPUT_RATES (24 kHz unless said), or G.711
    µ-law/A-law (`audio/pcmu`, `audio/pcma`) at 8 kHz."""
    kind, rate = _format(value)
    if kind in ("audio/pcmu", "audio/pcma"):
        return _g711(kind, rate, param)
    if kind != "audio/pcm":
        raise SessionError(
            f"Invalid value for '{param}.type': audio/pcm, audio/pcmu or audio/pcma, not {kind}.",
            "invalid_value",
            f"{param}.type",
        )
    rate = rate or OUTPUT_RATE
    if rate not in INPUT_RATES:
        rates = ", ".join(map(str, INPUT_RATES))
        raise SessionError(
            f"Invalid value for '{param}.rate': one of {rates}.", "invalid_value", f"{param}.rate"
        )
    return WireFormat("audio/pcm", int(rate))


def check_output_format(value: dict[str, Any] | AudioFormat | None, param: str) -> WireFormat:
    """The reply audio's format: PCM16 at 24 kHz, or G.711 µ-law/A-law at 8 kHz."""
    kind, rate = _format(value)
    if kind in ("audio/pcmu", "audio/pcma"):
        return _g711(kind, rate, param)
    if kind != "audio/pcm" or (rate or OUTPUT_RATE) != OUTPUT_RATE:
        raise SessionError(
            f"Invalid value for '{param}': output audio is audio/pcm at {OUTPUT_RATE} Hz, or "
            "audio/pcmu or audio/pcma (G.711 at 8 kHz).",
            "unsupported",
            param,
        )
    return WireFormat("audio/pcm", OUTPUT_RATE)


def _g711(kind: str, rate: Any, param: str) -> WireFormat:
    if rate not in (None, G711_RATE):
        raise SessionError(
            f"Invalid value for '{param}.rate': {kind} is {G711_RATE} Hz.", "invalid_value", f"{param}.rate"
        )
    return PCMU if kind == "audio/pcmu" else PCMA


class ResponseState:
    """The response under way: its ids, modality, the text and seconds of audio sent, and the
    audio's format (the session's when it began: a later `session.update` changes the next one)."""

    def __init__(
        self,
        response_id: str,
        item_id: str,
        speak: bool,
        metadata: dict[str, str] | None,
        output_format: WireFormat,
    ) -> None:
        self.id = response_id
        self.item_id = item_id
        self.speak = speak
        self.metadata = metadata
        self.text: list[str] = []
        self.audio_s = 0.0
        self.encoder = WireEncoder(output_format)
        self.spoken: list[ReplyAudio] = []
        """The reply's pieces, with their words' times (what a truncation cuts by)."""
        self.heard_limit_s: float | None = None
        """What the client said it played of it (`conversation.item.truncate` while in progress)."""

    def keep(self, piece: ReplyAudio) -> list[dict[str, object]]:
        """Keep a piece of the reply; its words in seconds from the start of the item's audio."""
        start = sum(kept.audio.duration for kept in self.spoken)
        self.spoken.append(piece)
        return words_json(piece.audio.words, start)

    def where(self) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "audio", "transcript": text} if self.speak else {"type": "text", "text": text}

    def content(self, text: str) -> dict[str, Any]:
        if self.speak:
            return {"type": "output_audio", "transcript": text}
        return {"type": "output_text", "text": text}

    def item(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return message_item(self.item_id, "assistant", status, content)


def message_item(item_id: str, role: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """A conversation item of type `message`, in OpenAI's shape."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }
