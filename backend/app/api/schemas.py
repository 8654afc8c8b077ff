"""Request and response models at the HTTP boundary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from backend.app.audio.encode import AudioFormat


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModuleHealth(BaseModel):
    ready: bool
    model: str | None
    device: str | None
    in_progress: int | None = Field(
        None, description="Requests admitted to this model: the one running plus those waiting."
    )
    capacity: int | None = Field(
        None, description="Most requests admitted at once (1 + QUEUE_SIZE); beyond, 503."
    )
    error: str | None = Field(None, description="What is wrong with this module, when it is not ready.")


class ToolServerHealth(BaseModel):
    connected: bool
    tools: int = Field(..., description="The tools it offers now.")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "degraded"]
    modules: dict[str, ModuleHealth]
    error: str | None = Field(
        None,
        description="Why the server is degraded: a model that failed to load, a full disk, a bad database.",
    )
    tools: dict[str, ToolServerHealth] = Field(
        default_factory=dict,
        description="Each MCP server of MCP_SERVERS: connected or not, and its tools (one that is down "
        "does not degrade the server: its tools are not offered until it is back).",
    )


class WordOut(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class SegmentOut(BaseModel):
    start: float
    end: float
    text: str
    words: list[WordOut] | None = None


class STTResponse(BaseModel):
    text: str
    language: str
    duration: float
    segments: list[SegmentOut]
    timings: dict[str, float]
    optimized_text: str | None = None


class ChatRequest(BaseModel):
    text: str = Field(..., description="The user's message.")
    conversation_id: str | None = Field(
        None, description="Continue this conversation; omit to start a new one."
    )
    stream: bool = Field(False, description="Answer Server-Sent Events as the reply is generated.")


class ToolStepOut(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="The arguments the model gave, as JSON text.")
    result: str = Field(description="What the tool answered (cut to TOOL_RESULT_CHARS), or the error.")
    server: str = Field("", description="The MCP server that has the tool.")
    error: bool = False
    ms: float = 0.0


class ChatResponse(BaseModel):
    reply: str
    conversation_id: str
    timings: dict[str, float]
    tools: list[ToolStepOut] = Field(default_factory=list, description="The reply's calls of MCP tools.")


class ScriptTurnIn(BaseModel):
    speaker: str | int = Field(..., description="The speaker's label: `1` (Speaker 1), `Alice`.")
    text: str = Field(..., max_length=100_000, description="What the speaker says.")


class TTSRequest(BaseModel):
    text: str | None = Field(
        None,
        description="Text to speak. Lines `Speaker 1: ...`, `Alice: ...` (or `Alice：...`) make it a "
        "dialogue script, each speaker in its own voice (see `dialogue`).",
    )
    script: list[ScriptTurnIn] | None = Field(
        None,
        max_length=100_000,
        description='A dialogue as turns instead of `text`: `[{"speaker": "Alice", "text": "..."}]`.',
    )
    speakers: dict[str, str] | None = Field(
        None,
        description="A script's speakers and their voices: "
        '`{"1": "Joe", "Alice": "en-Eve_woman.wav"}` '
        "(a voice name, a voice file inside the voices directory, or `piper:<speaker>`). Unmapped "
        "speakers get the default cast: the library's voices in order, the default voice first.",
    )
    cast: str | None = Field(
        None, description="A cast stored with PUT /casts/{name}; `speakers` override it."
    )
    dialogue: bool | None = Field(
        None,
        description="null: `text` is a script when some line is labelled `Speaker <n>:`, or names a "
        "speaker of `speakers`/`cast`, or two lines or more are labelled; true: it must be a script; "
        "false: always plain text.",
    )
    voice: str | None = Field(None, description="A voice name from /speaker_info.")
    speaker_voice_path: str | None = Field(
        None, description="A voice file name in VOICES_DIR, or a path resolving inside it."
    )
    cfg_scale: float | None = Field(
        None, ge=0.5, le=2.0, description="Guidance for voice-cloning engines (default DEFAULT_CFG_SCALE)."
    )
    format: AudioFormat = Field(
        "wav", description="wav, flac, mp3, ogg (Opus), aac (ADTS) or pcm (s16le mono)."
    )
    speed: float = Field(1.0, ge=0.5, le=2.0, description="Speaking rate; 1 is normal.")
    stream: bool = Field(False, description="Send the audio segment by segment as it is synthesised.")
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="With stream=true: `audio` sends the encoded audio as one chunked stream; `sse` "
        "sends an `audio` event per piece (its turns and speakers, and the piece as a base64 file "
        "in `format`), then `done`.",
    )

    timestamps: bool = Field(
        False,
        description="Answer JSON: the audio as base64 with `words` (`[{word, start, end}]`, seconds), "
        "where each word of the text is heard. Streamed `sse` events carry their piece's words always.",
    )
    captions: Literal["srt", "vtt"] | None = Field(
        None, description="Answer JSON (as `timestamps`) with `captions`: SubRip or WebVTT cues of the words."
    )

    @model_validator(mode="after")
    def _text_or_script(self) -> TTSRequest:
        if (self.text is None) == (self.script is None):
            raise ValueError("give either `text` or `script`")
        if (self.timestamps or self.captions) and self.stream and self.stream_format == "audio":
            raise ValueError(
                "`timestamps` and `captions` answer JSON; to stream the words, use stream_format=sse"
            )
        return self


class SpokenWordOut(BaseModel):
    word: str
    start: float = Field(description="Seconds from the start of the audio.")
    end: float


class TimedSpeechResponse(BaseModel):
    audio: str = Field(description="The audio file, base64.")
    format: AudioFormat
    sample_rate: int
    duration: float
    words: list[SpokenWordOut]
    captions: str | None = Field(None, description="With `captions`: the SubRip or WebVTT text.")


class CastIn(BaseModel):
    speakers: dict[str, str] = Field(
        ..., description="Speaker label -> voice (name, voice file, or `piper:<speaker>`)."
    )


class CastOut(BaseModel):
    name: str
    speakers: dict[str, str]
    created_at: float
    updated_at: float


class CastListResponse(BaseModel):
    casts: list[CastOut]


class DialogueInfo(BaseModel):
    native: bool = Field(description="True when the engine voices several speakers in one generation.")
    max_speakers_per_window: int | None = Field(
        description="Speakers one generation voices (native engines); a script is cut into windows "
        "of whole turns."
    )
    window_chars: int | None
    distinct_voices: bool = Field(
        description="False when every speaker of a script is heard in the engine's one voice."
    )
    default_cast: list[str] = Field(description="The voices unmapped speakers get, in order.")


class ConversationResponse(BaseModel):
    transcript: str
    reply: str
    conversation_id: str | None
    audio_url: str | None
    timings: dict[str, float]
    tools: list[ToolStepOut] = Field(default_factory=list, description="The reply's calls of MCP tools.")


class VoiceOut(BaseModel):
    file: str
    name: str
    language: str | None
    gender: str | None
    duration: float | None = Field(None, description="Seconds, from the file header.")
    sample_rate: int | None = None
    deletable: bool = Field(False, description="In a writable directory: DELETE /voices/{name} removes it.")


class VoiceListResponse(BaseModel):
    voices: list[VoiceOut]
    default_voice: str | None


class CacheOut(BaseModel):
    size: int
    capacity: int
    hits: int
    misses: int
    evictions: int


class SpeakerInfoResponse(BaseModel):
    voices: list[VoiceOut]
    default_voice: str | None
    supports_cloning: bool
    cache: CacheOut
    dialogue: DialogueInfo
    casts: list[CastOut]


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 503, 507)
}


class TurnOut(BaseModel):
    role: Literal["user", "assistant"]
    text: str
    created_at: float = Field(description="Unix time, seconds.")
    language: str | None = None
    voice: str | None = None
    audio_url: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    interrupted: bool = Field(
        False, description="A reply cut short (barge-in or client gone): `text` is what was delivered."
    )
    tools: list[ToolStepOut] = Field(
        default_factory=list, description="A reply's calls of MCP tools, in order, with their results."
    )


class ConversationOut(BaseModel):
    id: str
    title: str
    system_prompt: str | None
    voice: str | None
    created_at: float
    updated_at: float
    turn_count: int


class ConversationDetail(ConversationOut):
    turns: list[TurnOut]


class ConversationPage(BaseModel):
    conversations: list[ConversationOut]
    total: int
    limit: int
    offset: int


class ConversationPatch(BaseModel):
    """Fields to change; omit a field to keep it, send "" for system_prompt or voice to clear it."""

    title: str | None = Field(None, max_length=200)
    system_prompt: str | None = Field(None, max_length=4000)
    voice: str | None = Field(None, max_length=200)
