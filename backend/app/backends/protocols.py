"""One small Protocol per capability. Services depend on these, never on an engine.

Adding an engine is one new module in `backends/` that implements its stage's Protocol and defines
`load(settings)` and `model_files(settings)`, plus one line in `backends/registry.py`; the
`STT_ENGINE` / `LLM_ENGINE` / `TTS_ENGINE` setting then selects it by name. The value types these
methods take and return are in `core/values.py`.

All methods here block; services call them on the model's worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from backend.app.audio.types import Audio, Words
from backend.app.core.tools import ToolRequest
from backend.app.core.values import (
    CallPending,
    ChatMessage,
    DialogueRequest,
    GenerationOptions,
    ModelInfo,
    SynthesisRequest,
    ToolCall,
    TranscribeOptions,
    Transcription,
    TranscriptSegment,
)


class SpeechToText(Protocol):
    info: ModelInfo
    sample_rate: int
    """The rate `transcribe` expects its audio at."""
    multilingual: bool

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription: ...

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        """Each segment as it is decoded, then the whole `Transcription` (the same `transcribe`
        returns). Closing the iterator early stops the decoding."""
        ...


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


@runtime_checkable
class ToolCallingChat(Protocol):
    """A chat engine whose model can call functions (llama.cpp with the model's template, an
    OpenAI-compatible server). Engines without it answer requests that offer tools with a 400."""

    def chat_tools_stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall | CallPending]:
        """The reply as answer-text deltas, `CallPending` as soon as a call begins, and at its end
        the calls it makes (each checked against its function's schema). Closing the iterator early
        stops the generation."""
        ...


class TextToSpeech(Protocol):
    info: ModelInfo
    sample_rate: int
    supports_cloning: bool
    """True when the engine imitates a reference voice (`prepare_voice` + `SynthesisRequest.voice`)."""
    supports_speed: bool
    """True when the engine speaks at `SynthesisRequest.speed` itself; otherwise the TTS service
    synthesises at 1.0 and changes the tempo afterwards."""
    speakers: tuple[str, ...]
    """The engine's own voices (a multi-speaker Piper model's speaker map); () when it has one voice
    or clones reference clips instead. The library lists them as `piper:<name>`."""
    languages: tuple[str, ...]
    """The languages the engine speaks (ISO 639-1). Text in a script only another language writes
    (Chinese characters, kana, Hangul: `text/chinese.script_language`) is refused before synthesis
    when its language is not here."""
    max_dialogue_speakers: int
    """Speakers one generation can voice (0: the engine speaks a script turn by turn; see
    `DialogueSpeech`)."""

    def prepare_voice(self, audio: Audio) -> object:
        """Turn a reference clip at `sample_rate` into the engine's speaker prompt (cached by callers)."""
        ...

    def synthesize(self, request: SynthesisRequest) -> Audio:
        """The speech, with `Audio.words` where the engine knows when each word is heard (from
        its durations); None leaves them to the STT model's forced alignment."""
        ...

    def estimate_seconds(self, text: str) -> float:
        """About how long the speech for `text` would be at speed 1.0, without synthesising it (cheap:
        the TTS service bounds a request by it before any synthesis)."""
        ...


@runtime_checkable
class WordAligner(Protocol):
    """An STT engine that can place the words of a known text on its speech (Whisper): the word
    timings of a TTS engine that gives none of its own (VibeVoice)."""

    def align(self, audio: Audio, text: str) -> Words: ...


class DialogueSpeech(TextToSpeech, Protocol):
    """An engine that speaks several voices in one generation (VibeVoice: up to four)."""

    def synthesize_dialogue(self, request: DialogueRequest) -> Audio: ...


def final_transcription(items: Iterable[TranscriptSegment | Transcription]) -> Transcription:
    """The whole transcription a `transcribe_stream` ends with (its segments are passed over)."""
    for item in items:
        if isinstance(item, Transcription):
            return item
    raise RuntimeError("the transcription stream ended without its result")
