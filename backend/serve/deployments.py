"""One Ray Serve deployment per model. Each replica loads its engine through the server's own
engine registry (`backends/registry.py`), from the settings in its environment (the same variables
as `python -m backend.app`), warms it up, and answers the calls of the Protocol in `backends/protocols.py`.

A replica runs one inference at a time: Serve queues the rest in front of the replicas, and the
ingress bounds that queue (QUEUE_SIZE) as the server does. The chat replica also answers token
counts (the ingress fits the history to the context with them) while it generates, so it takes
several requests at once and lets one of them generate at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from ray import serve

from backend.app.audio.types import Audio
from backend.app.backends import registry
from backend.app.backends.protocols import DialogueSpeech, ToolCallingChat
from backend.app.container import warm_up_chat
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError
from backend.app.core.logs import configure_logging
from backend.app.core.process import set_model_process_env
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    """What the ingress needs to know of a remote engine besides its calls."""

    info: ModelInfo
    sample_rate: int = 0
    multilingual: bool = False
    supports_cloning: bool = False
    supports_speed: bool = False
    speakers: tuple[str, ...] = ()
    max_dialogue_speakers: int = 0
    languages: tuple[str, ...] = ()


T = TypeVar("T")


def _relayed(stream: Iterator[T]) -> Iterator[T]:
    """`stream`'s items; when the consumer stops early, the engine's iterator is closed at once (a
    generator backend stops its inference in its `finally`)."""
    try:
        yield from stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def replica_settings() -> Settings:
    """The server's settings from this replica's environment, with its logging configured; and
    the environment the models' libraries read as they load (GOMP_SPINCOUNT, ...) set as
    `python -m backend.app` sets it, unless the user set it (in `env`, or on the node). Each
    replica calls it first, before its engine loads."""
    set_model_process_env()
    settings = Settings()
    configure_logging(settings.server.log_level, settings.server.log_format)
    return settings


@serve.deployment(name="stt", max_ongoing_requests=1, ray_actor_options={"num_cpus": 1})
class STTDeployment:
    """Speech to text (faster-whisper): STT_MODEL_NAME, STT_DEVICE, STT_COMPUTE_TYPE."""

    def __init__(self) -> None:
        self.backend = registry.load_stt(replica_settings())
        self.backend.transcribe(
            Audio.silence(0.5, self.backend.sample_rate), TranscribeOptions(language="en")
        )
        logger.info("stt replica ready: %s on %s", self.backend.info.model, self.backend.info.device)

    def describe(self) -> EngineInfo:
        b = self.backend
        return EngineInfo(b.info, sample_rate=b.sample_rate, multilingual=b.multilingual)

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return self.backend.transcribe(audio, options)

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        """Segments as they are decoded, then the whole transcription (a consumer may stop early)."""
        yield from _relayed(self.backend.transcribe_stream(audio, options))


@serve.deployment(name="chat", max_ongoing_requests=8, ray_actor_options={"num_cpus": 1})
class ChatDeployment:
    """The LLM: LLM_BACKEND=local (llama.cpp or a transformers model in the replica) or openai (a
    client of an OpenAI-compatible server, such as vLLM or Ollama)."""

    def __init__(self) -> None:
        settings = replica_settings()
        self.backend = registry.load_chat(settings)
        self._generating = threading.Lock()  # one generation at a time; token counts need no turn
        if registry.engine("llm", settings).local:
            warm_up_chat(self.backend, settings.llm.system_prompt)
        logger.info("chat replica ready: %s on %s", self.backend.info.model, self.backend.info.device)

    def describe(self) -> EngineInfo:
        return EngineInfo(self.backend.info)

    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        with self._generating:
            return self.backend.chat(messages, options)

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        """Text deltas as they are generated; a consumer that stops early ends the generation."""
        with self._generating:
            yield from _relayed(self.backend.chat_stream(messages, options))

    def chat_tools_stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall | CallPending]:
        """Answer text and calls, as the engine's own `chat_tools_stream`."""
        if not isinstance(self.backend, ToolCallingChat):
            raise InvalidInputError(f"the LLM ({self.backend.info.model}) cannot call tools on this engine")
        with self._generating:
            yield from _relayed(self.backend.chat_tools_stream(messages, options, tools))

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.backend.count_tokens(messages)

    def count_text_tokens(self, text: str) -> int:
        return self.backend.count_text_tokens(text)


@serve.deployment(name="tts", max_ongoing_requests=1, ray_actor_options={"num_cpus": 1})
class TTSDeployment:
    """Text to speech: TTS_MODEL_NAME (Piper on the CPU, VibeVoice on CUDA), TTS_DEVICE. A reply
    is synthesised sentence by sentence, one call each, so replicas share a long reply's work."""

    def __init__(self) -> None:
        self.backend = registry.load_tts(replica_settings())
        self.backend.synthesize(SynthesisRequest(getattr(self.backend, "warm_up_text", "Ready.")))
        logger.info("tts replica ready: %s on %s", self.backend.info.model, self.backend.info.device)

    def describe(self) -> EngineInfo:
        b = self.backend
        return EngineInfo(
            b.info,
            sample_rate=b.sample_rate,
            supports_cloning=b.supports_cloning,
            supports_speed=b.supports_speed,
            speakers=b.speakers,
            max_dialogue_speakers=b.max_dialogue_speakers,
            languages=b.languages,
        )

    def prepare_voice(self, audio: Audio) -> object:
        return self.backend.prepare_voice(audio)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.backend.synthesize(request)

    def synthesize_dialogue(self, request: DialogueRequest) -> Audio:
        return cast(DialogueSpeech, self.backend).synthesize_dialogue(request)

    def estimate_seconds(self, text: str) -> float:
        return self.backend.estimate_seconds(text)
