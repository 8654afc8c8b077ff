"""One small Protocol per capability. Services depend on these, never on an engine.

A second engine is a new module implementing the Protocol, chosen in `backends/factory.py`.
All methods here block; services call them on the model's worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from backend.app.audio.types import Audio


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


class SpeechToText(Protocol):
    info: ModelInfo
    sample_rate: int
    """The rate `transcribe` expects its audio at."""
    multilingual: bool

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription: ...


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int
    temperature: float


class ChatModel(Protocol):
    info: ModelInfo

    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str: ...

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        """The reply as text deltas while it is generated. Closing the iterator early stops the
        generation itself (no tokens are produced for a reply nobody will hear)."""
        ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens these messages take (exact with a local tokenizer, an estimate otherwise)."""
        ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens of generated text (exact with a local tokenizer, an estimate otherwise)."""
        ...


@dataclass(frozen=True)
class SynthesisRequest:
    """One piece of text to speak.

    `voice` is a reference voice prepared by the same engine's `prepare_voice` (engines that clone).
    """

    text: str
    voice: object | None = None
    cfg_scale: float = 1.0
    speed: float = 1.0


class TextToSpeech(Protocol):
    info: ModelInfo
    sample_rate: int
    supports_cloning: bool
    """True when the engine imitates a reference voice (`prepare_voice` + `SynthesisRequest.voice`)."""
    supports_speed: bool
    """True when the engine speaks at `SynthesisRequest.speed` itself; otherwise the TTS service
    synthesises at 1.0 and changes the tempo afterwards."""

    def prepare_voice(self, audio: Audio) -> object:
        """Turn a reference clip at `sample_rate` into the engine's speaker prompt (cached by callers)."""
        ...

    def synthesize(self, request: SynthesisRequest) -> Audio: ...

    def estimate_seconds(self, text: str) -> float:
        """About how long the speech for `text` would be at speed 1.0, without synthesising it (cheap:
        the TTS service bounds a request by it before any synthesis)."""
        ...
