"""The composition root: every service built once, from the settings (the app's lifespan owns
the result), and the gate every transport asks whether they are up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backend.app.audio.decode import resample
from backend.app.audio.turn import EndOfTurn
from backend.app.audio.vad import SileroVAD
from backend.app.backends import registry
from backend.app.backends.protocols import ChatModel, SpeechToText, TextToSpeech, WordAligner
from backend.app.backends.turn_words import WordsEndOfTurn
from backend.app.core.admission import TYPICAL_TURN_S, refuse_early
from backend.app.core.config import Settings
from backend.app.core.cpu import CpuTurns
from backend.app.core.errors import ModelLoadError, NotReadyError, OverloadedError
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.values import (
    ChatMessage,
    GenerationOptions,
    ModelInfo,
    SynthesisRequest,
    TranscribeOptions,
)
from backend.app.core.worker import ModelWorker
from backend.app.services.casts import CastService
from backend.app.services.chat import ChatService
from backend.app.services.conversation import ConversationService
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import DatabaseOutputs, OutputStore, ReplyAudioStore
from backend.app.services.realtime.service import RealtimeService
from backend.app.services.stt import STTService
from backend.app.services.tts import TTSService
from backend.app.services.voices import VoiceService
from backend.app.storage.conversations import ConversationStore
from backend.app.storage.protocols import ConversationStorage
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageLoad:
    """A model stage as /health reports it: its model, the requests in progress, how many it admits."""

    info: ModelInfo
    pending: int
    capacity: int


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
    casts: CastService

    def stages(self) -> dict[str, StageLoad]:
        """Each model stage (stt, chat, tts): its model and its load, for /health."""
        stages = (
            ("stt", self.stt.info, self.stt.worker),
            ("chat", self.chat.info, self.chat.worker),
            ("tts", self.tts.info, self.tts.worker),
        )
        return {name: StageLoad(info, worker.pending, worker.capacity) for name, info, worker in stages}

    def refuse_early(self, group: str) -> OverloadedError | None:
        """The 503 a request of route group `group` gets before its body is read, when the work
        ahead of it already rules it out (core/admission.py), counted as a refusal by wait."""
        workers = {
            "turn": (self.stt.worker, self.chat.worker, self.tts.worker),
            "stt": (self.stt.worker,),
            "chat": (self.chat.worker,),
            "tts": (self.tts.worker,),
        }.get(group, ())
        refusal = refuse_early(workers, whole=group == "turn")
        if refusal is not None:
            if group == "turn":
                self.conversation.turns.refused += 1
            else:
                workers[0].refused["wait"] += 1
        return refusal

    def sweep_outputs(self) -> int:
        """One retention pass over OUTPUTS_DIR, sparing audio that young stored turns refer to."""
        return self.history.sweep_outputs()

    def shutdown(self) -> None:
        for worker in (self.stt.worker, self.chat.worker, self.tts.worker):
            worker.shutdown()
        self.history.close()


class ServiceGate:
    """Whether the services are up: the one place every transport asks (HTTP routes, both
    WebSockets, Wyoming, QuQu's status). The app starts with none and its loader sets them; a
    module's model loaded meanwhile is in `loaded` (for /health)."""

    def __init__(self, services: Services | None = None) -> None:
        self.services = services
        self.load_error: str | None = None
        """Why the services could not be built, when they could not."""
        self.loaded: dict[str, ModelInfo] = {}

    @property
    def ready(self) -> bool:
        return self.services is not None

    def require(self) -> Services:
        """The services, or NotReadyError (503, Retry-After) saying why there are none yet."""
        if self.services is None:
            if self.load_error:
                raise NotReadyError(f"the server could not start its services: {self.load_error}")
            raise NotReadyError("the models are still loading; retry shortly")
        return self.services


def engine_name(stage: registry.Stage, settings: Settings) -> str:
    """The name of the engine the settings select for `stage` ("faster-whisper", "llama.cpp", ...)."""
    return registry.engine(stage, settings).name


def cuda_available() -> bool:
    """Whether a CUDA device is there (QuQu's status reports it)."""
    return registry.cuda_available()


def load_end_of_turn(settings: Settings) -> EndOfTurn | None:
    """The semantic end-of-turn model, unless turns end by silence everywhere. A session may still
    ask for semantic turns (OpenAI's `semantic_vad`), so it is loaded whenever it can be; one that
    cannot load leaves turns to silence, said once here."""
    try:
        end_of_turn = EndOfTurn()
    except ModelLoadError as e:
        if settings.vad.turn_detection == "semantic":
            logger.warning("%s; turns end by silence (VAD_MIN_SILENCE_MS)", e)
        return None
    if settings.vad.turn_words_threshold > 0:
        try:
            end_of_turn.words = words = WordsEndOfTurn(settings.storage.models_dir)
            words.finished("Is this thing on")  # reads its system prompt now, not at the first pause
        except ModelLoadError as e:
            logger.warning("%s; the words of a pause are judged by their last word only", e)
    return end_of_turn


def warm_up(
    stt: SpeechToText, chat: ChatModel, tts: TextToSpeech, chat_is_local: bool = True, system_prompt: str = ""
) -> None:
    """One tiny inference per model, so that the first request does not pay for lazy set-up."""
    # An engine of one language says its own word (the Mandarin voice cannot read "Ready.").
    speech = tts.synthesize(SynthesisRequest(getattr(tts, "warm_up_text", "Ready.")))
    others = getattr(tts, "warm_up", None)  # the voices of other languages (by_language.py)
    if callable(others):
        others()
    stt.transcribe(resample(speech, stt.sample_rate), TranscribeOptions(language="en"))
    if chat_is_local:
        warm_up_chat(chat, system_prompt)


def warm_up_chat(chat: ChatModel, system_prompt: str = "") -> None:
    """One generated token, after the configured system prompt: an engine that keeps processed
    prompts (llama.cpp) then has it read already, so a new conversation's first turn reads only
    its own words. Not for a model served elsewhere (an OpenAI-compatible server may be slow, or
    not up yet): the registry says which engines run here."""
    messages = [ChatMessage("system", system_prompt)] if system_prompt else []
    messages.append(ChatMessage("user", "Hi"))
    chat.chat(messages, GenerationOptions(max_tokens=1, temperature=0.0))


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
    ingress: int = 1
    """Ingress replicas calling those replicas: each admits work against 1/ingress of them."""


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
    stt_backend = registry.load_stt(settings)
    ready("stt", stt_backend.info, began)
    began = time.perf_counter()
    chat_backend = registry.load_chat(settings)
    ready("chat", chat_backend.info, began)
    began = time.perf_counter()
    tts_backend = registry.load_tts(settings)
    ready("tts", tts_backend.info, began)
    local = registry.engine("llm", settings).local
    warm_up(stt_backend, chat_backend, tts_backend, local, settings.llm.system_prompt)
    services = assemble_services(settings, Backends(stt_backend, chat_backend, tts_backend), metrics)
    logger.info("models loaded and warmed up in %.1f s", time.perf_counter() - started)
    return services


def open_storage(settings: Settings) -> tuple[ConversationStorage, ReplyAudioStore]:
    """The conversation store and where reply audio is kept: SQLite under DATA_DIR and files in
    OUTPUTS_DIR, or, with DATABASE_URL, both in that PostgreSQL database."""
    storage = settings.storage
    if storage.database_url is not None:
        from backend.app.storage.postgres import PostgresStore

        shared = PostgresStore(storage.database_url.get_secret_value())
        return shared, DatabaseOutputs(shared, storage.outputs_ttl_hours, storage.outputs_max_mb)
    return (
        ConversationStore(storage.data_dir / "conversations.db", storage.min_free_disk_bytes),
        OutputStore(
            storage.outputs_dir, storage.outputs_ttl_hours, storage.outputs_max_mb, storage.min_free_disk_mb
        ),
    )


def share_cores(engine: object, turns: CpuTurns) -> None:
    """Give `turns` to each engine, or part of a composite engine (`parts`), that runs on this
    machine's CPU and takes turns on its cores (those with a `cpu` attribute: the engines that run
    a call on every core, and the one-thread voice, which gives way to a spoken turn's reply)."""
    info = getattr(engine, "info", None)
    if hasattr(engine, "cpu") and info is not None and info.device.startswith("cpu"):
        engine.cpu = turns
    for part in getattr(engine, "parts", ()):
        share_cores(part, turns)


def word_aligner(stt: SpeechToText) -> WordAligner | None:
    """The STT engine (or the part of it) that places a text's words on speech: the word timings
    of TTS engines that give none of their own."""
    for engine in (stt, *getattr(stt, "parts", ())):
        if isinstance(engine, WordAligner):
            return engine
    return None


def assemble_services(
    settings: Settings,
    backends: Backends,
    metrics: ServiceMetrics | None = None,
    concurrency: StageConcurrency | None = None,
) -> Services:
    """Wire the services over engines that are ready (each behind its own bounded worker)."""
    metrics = metrics or ServiceMetrics()
    concurrency = concurrency or StageConcurrency()
    queue = settings.limits.queue_size
    if settings.limits.cpu_slice_ms and (concurrency.stt, concurrency.chat, concurrency.tts) == (1, 1, 1):
        turns = CpuTurns(settings.limits.cpu_slice_ms / 1000)
        for engine in (backends.stt, backends.chat, backends.tts):
            share_cores(engine, turns)
    share = 1.0 / concurrency.ingress
    storage = settings.storage
    stt = STTService(
        backends.stt,
        ModelWorker("stt", queue, settings.stt.timeout_s, concurrency.stt, 0.5, TYPICAL_TURN_S, share),
        settings.stt,
        metrics,
    )
    library = VoiceLibrary(settings.voices.dir, settings.voices.default, storage.data_dir / "voices")
    store, outputs = open_storage(settings)
    history = ConversationHistory(
        store, outputs, library, max_per_conversation=settings.limits.conversation_queue_size + 1
    )
    chat = ChatService(
        backends.chat,
        ModelWorker("chat", queue, settings.llm.timeout_s, concurrency.chat, 2.0, 1.0, share),
        settings.llm,
        history,
        metrics,
        max_chars=settings.tts.max_chars,
    )
    tts = TTSService(
        backends.tts,
        ModelWorker("tts", queue, settings.tts.timeout_s, concurrency.tts, 0.3, TYPICAL_TURN_S, share),
        library,
        SpeakerCache[object](settings.voices.cache_size),
        settings.tts,
        metrics,
        aligner=word_aligner(backends.stt),
    )
    tts.preload(settings.voices.preload)
    casts = CastService(history.store.casts, tts)
    casts.preload()
    conversation = ConversationService(stt, chat, tts, history, metrics)
    voices = VoiceService(library, tts.worker, backends.tts.sample_rate, settings.voices)
    realtime = RealtimeService(
        conversation, stt, SileroVAD(), settings.realtime, settings.vad, load_end_of_turn(settings)
    )
    metrics.watch(
        lambda: (stt.worker, chat.worker, tts.worker), tts.cache.stats, lambda: (conversation.turns,)
    )
    return Services(stt, chat, tts, conversation, history, voices, realtime, metrics, casts)
