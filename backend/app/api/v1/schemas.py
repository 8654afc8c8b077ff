"""Request and response models of the OpenAI-compatible routes, shaped as OpenAI's.

Requests accept (and ignore) fields this server has no use for, as clients send many (`user`,
`seed`, ...); the fields we honour are validated with OpenAI's bounds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


OPENAI_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": OpenAIError} for status in (400, 401, 404, 413, 503)
}


# --- models ------------------------------------------------------------------------------------


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# --- audio -------------------------------------------------------------------------------------


class VoiceID(BaseModel):
    """A voice given as an object, as OpenAI's custom voices are."""

    model_config = ConfigDict(extra="allow")
    id: str


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="tts-1, tts-1-hd, gpt-4o-mini-tts or the TTS model's id.")
    input: str = Field(..., description="The text to speak (up to MAX_TTS_CHARS characters).")
    voice: str | VoiceID = Field(
        ..., description="A library voice, or an OpenAI voice name mapped to one (OPENAI_VOICES)."
    )
    instructions: str | None = Field(
        None, max_length=4096, description="Accepted; the embedded engines do not take instructions."
    )
    response_format: SpeechFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: the bytes, streamed as synthesised; sse: speech.audio.* events."
    )
    timestamps: bool = Field(
        False,
        description="Not OpenAI's: answer JSON with the audio as base64 and `words` "
        "(`[{word, start, end}]`, seconds) where each word is heard. sse deltas carry words always.",
    )


class TimedSpeech(BaseModel):
    audio: str = Field(description="The audio file in `format`, base64.")
    format: str
    sample_rate: int
    duration: float
    words: list[TranscriptWord]


class VoiceList(BaseModel):
    voices: list[str]
    openai_voices: dict[str, str | None] = Field(
        description="OpenAI's voice names and the library voice each stands for (null: the engine's own)."
    )


class TranscriptWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptSegmentOut(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionOut(BaseModel):
    text: str
    usage: DurationUsage | None = None


class TranscriptionVerboseOut(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str = Field(description="The language's English name, lower-case (`english`).")
    duration: float
    text: str
    segments: list[TranscriptSegmentOut] | None = None
    words: list[TranscriptWord] | None = None
    usage: DurationUsage | None = None


# --- chat --------------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(..., max_length=64)
    arguments: str = Field("", max_length=1_000_000, description="The arguments, as JSON text.")


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(..., min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = Field(
        None, max_length=128, description="An assistant message's calls."
    )
    tool_call_id: str | None = Field(
        None, max_length=128, description="A `tool` message: the call it answers."
    )


class FunctionIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Any = Field(..., description="1-64 letters, digits, '_' or '-'.")
    description: Any = None
    parameters: Any = Field(None, description="A JSON Schema of an object.")
    strict: bool | None = None


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Omitted: the server's LLM_TEMPERATURE (0, greedy, by default)."
    )
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences that end the reply.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolIn] | None = Field(None, description="Functions the model may call (at most 128).")
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = Field(
        None, description="Default `auto` when tools are given."
    )
    parallel_tool_calls: bool = True


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: None = None
