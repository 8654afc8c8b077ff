"""Build every service once, from the settings: the app's lifespan owns the result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backend.app.audio.decode import resample
from backend.app.audio.vad import SileroVAD, VADSettings
from backend.app.backends import factory
from backend.app.backends.openai_llm import OpenAIChatBackend
from backend.app.backends.protocols import ChatModel, SpeechToText, TextToSpeech
from backend.app.core.config import Settings
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.values import (
    ChatMessage,
    GenerationOptions,
    ModelInfo,
    SynthesisRequest,
    TranscribeOptions,
)
from backend.app.core.worker import ModelWorker
from backend.app.services.chat import ChatService, ChatSettings
from backend.app.services.conversation import ConversationService
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import OutputStore
from backend.app.services.realtime import RealtimeService, RealtimeSettings
from backend.app.services.stt import STTLimits, STTService
from backend.app.services.tts import TTSService, TTSSettings
from backend.app.services.voices import VoiceLimits, VoiceService
from backend.app.storage.conversations import ConversationStore
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary

logger = logging.getLogger(__name__)


@dataclass
class Services:
    stt: STTService
    chat: ChatService
    tts: TTSService
    conversation: ConversationService
    history: ConversationHistory
    voices: VoiceService
    realtime: RealtimeService
    metrics: ServiceMetrics

    def sweep_outputs(self) -> int:
        """One retention pass over OUTPUTS_DIR, sparing audio that young stored turns refer to."""
        return self.history.sweep_outputs()

    def shutdown(self) -> None:
        for worker in (self.stt.worker, self.chat.worker, self.tts.worker):
            worker.shutdown()
        self.history.close()


def warm_up(stt: SpeechToText, chat: ChatModel, tts: TextToSpeech) -> None:
    """One tiny inference per model, so that the first request does not pay for lazy set-up."""
    speech = tts.synthesize(SynthesisRequest("Ready."))
    stt.transcribe(resample(speech, stt.sample_rate), TranscribeOptions(language="en"))
    warm_up_chat(chat)


def warm_up_chat(chat: ChatModel) -> None:
    """One generated token; none for an OpenAI-compatible server, which may be slow or not up yet."""
    if not isinstance(chat, OpenAIChatBackend):
        chat.chat([ChatMessage("user", "Hi")], GenerationOptions(max_tokens=1, temperature=0.0))


@dataclass(frozen=True)
class Backends:
    """The three engines the services run on: loaded here, or proxies of remote ones (Ray Serve)."""

    stt: SpeechToText
    chat: ChatModel
    tts: TextToSpeech


@dataclass(frozen=True)
class StageConcurrency:
    """How many calls each stage runs at once: 1 for a model in this process, the replica count
    for a model served by Ray Serve deployments."""

    stt: int = 1
    chat: int = 1
    tts: int = 1


def build_services(settings: Settings, loaded: dict[str, ModelInfo] | None = None) -> Services:
    """Load the three models and wire the services. Raises ModelLoadError with a clear message.

    `loaded` (when given) receives each stage's model info as soon as that model is up, for
    /health to report progress while the rest load."""
    started = time.perf_counter()
    loaded = {} if loaded is None else loaded
    metrics = ServiceMetrics()

    def ready(stage: str, info: ModelInfo, since: float) -> None:
        seconds = time.perf_counter() - since
        loaded[stage] = info
        metrics.load_seconds.labels(stage, info.model).set(seconds)
        logger.info("%s ready: %s on %s (%.1f s)", stage, info.model, info.device, seconds)

    began = time.perf_counter()
    stt_backend = factory.load_stt(settings)
    ready("stt", stt_backend.info, began)
    began = time.perf_counter()
    chat_backend = factory.load_chat(settings)
    ready("chat", chat_backend.info, began)
    began = time.perf_counter()
    tts_backend = factory.load_tts(settings)
    ready("tts", tts_backend.info, began)
    warm_up(stt_backend, chat_backend, tts_backend)
    services = assemble_services(settings, Backends(stt_backend, chat_backend, tts_backend), metrics)
    logger.info("models loaded and warmed up in %.1f s", time.perf_counter() - started)
    return services


def assemble_services(
    settings: Settings,
    backends: Backends,
    metrics: ServiceMetrics | None = None,
    concurrency: StageConcurrency | None = None,
) -> Services:
    """Wire the services over engines that are ready (each behind its own bounded worker)."""
    metrics = metrics or ServiceMetrics()
    concurrency = concurrency or StageConcurrency()
    stt = STTService(
        backends.stt,
        ModelWorker("stt", settings.queue_size, settings.stt_timeout_s, concurrency.stt),
        STTLimits(max_audio_seconds=settings.max_audio_seconds),
        metrics,
    )
    library = VoiceLibrary(settings.voices_dir, settings.default_voice, settings.data_dir / "voices")
    history = ConversationHistory(
        ConversationStore(
            settings.data_dir / "conversations.db", int(settings.min_free_disk_mb * 1024 * 1024)
        ),
        OutputStore(
            settings.outputs_dir,
            settings.outputs_ttl_hours,
            settings.outputs_max_mb,
            settings.min_free_disk_mb,
        ),
        library,
        max_per_conversation=settings.conversation_queue_size + 1,
    )
    chat = ChatService(
        backends.chat,
        ModelWorker("chat", settings.queue_size, settings.llm_timeout_s, concurrency.chat),
        ChatSettings(
            system_prompt=settings.system_prompt,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            max_history_messages=settings.max_history_messages,
            context_tokens=settings.llm_context_tokens,
            max_chars=settings.max_tts_chars,
        ),
        history,
        metrics,
    )
    tts = TTSService(
        backends.tts,
        ModelWorker("tts", settings.queue_size, settings.tts_timeout_s, concurrency.tts),
        library,
        SpeakerCache[object](settings.speaker_cache_size),
        TTSSettings(
            max_chars=settings.max_tts_chars,
            segment_threshold_chars=settings.segment_threshold_chars,
            segment_silence_ms=settings.segment_silence_ms,
            default_cfg_scale=settings.default_cfg_scale,
            max_speech_seconds=settings.max_tts_speech_seconds,
        ),
        metrics,
    )
    tts.preload(settings.preload_voices)
    conversation = ConversationService(stt, chat, tts, history, metrics)
    voices = VoiceService(
        library,
        tts.worker,
        backends.tts.sample_rate,
        VoiceLimits(max_count=settings.voices_max_count, max_bytes=int(settings.voices_max_mb * 1024 * 1024)),
    )
    realtime = RealtimeService(conversation, SileroVAD(), realtime_settings(settings))
    metrics.watch(lambda: (stt.worker, chat.worker, tts.worker), tts.cache.stats)
    return Services(stt, chat, tts, conversation, history, voices, realtime, metrics)


def realtime_settings(settings: Settings) -> RealtimeSettings:
    return RealtimeSettings(
        vad=VADSettings(
            threshold=settings.vad_threshold,
            min_speech_ms=settings.vad_min_speech_ms,
            min_silence_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
            max_utterance_s=settings.ws_max_utterance_s,
        ),
        idle_timeout_s=settings.ws_idle_timeout_s,
        max_session_s=settings.ws_max_session_s,
        max_frame_bytes=settings.ws_max_frame_bytes,
        max_sessions=settings.ws_max_sessions,
        stt_beam_size=settings.ws_stt_beam_size,
    )
