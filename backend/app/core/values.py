"""The value types that cross layers: what a model is asked and what it answers.

Services, the API and `text/` build and read these; engines in `backends/` take and return them
through the Protocols in `backends/protocols.py`. They hold data only: no engine, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ModelInfo:
    """What /health reports about a loaded model, and the id /v1/models lists it under."""

    model: str
    device: str
    id: str = ""
    """A short, stable model id (`whisper-tiny.en`, `Qwen/Qwen2.5-1.5B-Instruct`); the OpenAI-compatible
    routes accept it as `model`."""


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    id: int = 0
    seek: int = 0
    """Decoder details, as Whisper reports them (OpenAI's verbose_json carries them)."""
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    initial_prompt: str | None = None
    hotwords: str | None = None
    word_timestamps: bool = False
    beam_size: int | None = None
    """None: the backend's configured beam size (STT_BEAM_SIZE)."""
    temperature: float | None = None
    """None or 0: greedy/beam decoding, with Whisper's fallback to higher temperatures when a
    segment looks like a failure; above 0: sample at that temperature only."""
    vad_filter: bool | None = None
    """None: the backend's own choice (Silero VAD on, to skip silence); False transcribes every
    second as it is (QuQu's `use_vad=false`)."""
    task: Literal["transcribe", "translate"] = "transcribe"
    """translate: English text from speech in any language (needs a multilingual model; an
    English-only model transcribes)."""


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[TranscriptSegment, ...] = field(default_factory=tuple)


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call, as OpenAI's API describes one: its name, what it does, and
    the JSON Schema of its arguments (an object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def openai(self) -> dict[str, Any]:
        """The tool as OpenAI's chat API (and chat templates) take it."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: an id the result refers to, the function's name, its arguments as
    JSON text (an object)."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class CallPending:
    """The model has begun writing a tool call (its text is held until the call is read): what a
    spoken reply can acknowledge at once, before the call is even complete."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant message's calls (its content may be empty)."""
    tool_call_id: str | None = None
    """A `tool` message: the call whose result `content` is."""


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int
    temperature: float


@dataclass(frozen=True)
class SynthesisRequest:
    """One piece of text to speak.

    `voice` is a reference voice prepared by the same engine's `prepare_voice` (engines that clone);
    `speaker` one of the engine's own `speakers` (a multi-speaker Piper model).
    """

    text: str
    voice: object | None = None
    cfg_scale: float = 1.0
    speed: float = 1.0
    speaker: str | None = None


@dataclass(frozen=True)
class DialogueLine:
    """One turn of a dialogue an engine speaks in one generation: `role` indexes the request's voices."""

    role: int
    text: str


@dataclass(frozen=True)
class DialogueRequest:
    """Turns by up to `max_dialogue_speakers` speakers, spoken in one pass; `voices[role]` is each
    role's prepared reference voice (None: the engine's own voice for that role)."""

    lines: tuple[DialogueLine, ...]
    voices: tuple[object | None, ...]
    cfg_scale: float = 1.0
