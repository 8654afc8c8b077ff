"""Shared fixtures: the real embedded models, loaded once per test session."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.backends.piper import PiperBackend
from backend.app.backends.protocols import ChatModel
from backend.app.backends.transformers_llm import TransformersChatBackend
from backend.app.backends.voice_pair import VoicePair
from backend.app.backends.whisper import WhisperBackend
from backend.app.container import Services, build_services
from backend.app.core.config import Settings
from backend.app.main import create_app
from tests.postgres import postgres  # noqa: F401 - the session's PostgreSQL server, as a fixture

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
SENTENCE = (DATA / "SENTENCE.txt").read_text().strip()
# The word error rate a Piper -> STT round trip of one short sentence stays under. Piper samples its
# durations and noise (VITS), so every rendering differs, and the tiny STT hears the near-homophones
# in SENTENCE (please/place, play some/place them, quiet/quite) on some of them, more or less often with
# the CPU's kernels. Over 280 renderings of SENTENCE (11 words) under CTranslate2's AVX-512 and AVX2
# int8 kernels and its float32 ones, it misheard no word 224 times, one 28, two 20, three 6 and four
# (all four of those homophones) twice; never five. A limit of three words failed one rendering in
# 140, in each of the tests that use it; four bounds the homophones. A broken path (silence, noise,
# the wrong rate) gives a rate near 1 and still fails.
SYNTH_WER = 0.4


def realtime_services(
    services: Services, settings: Settings, chat_tokens: int, backend: ChatModel | None = None
) -> Services:
    """The shared models, with a realtime service on `settings`' limits and replies of at most
    `chat_tokens` tokens (long enough to be cut, or short to be quick); `backend` replaces the LLM."""
    from backend.app.services.chat import ChatService
    from backend.app.services.conversation import ConversationService
    from backend.app.services.realtime.service import RealtimeService

    base = services.chat
    chat = ChatService(
        backend or base.backend,
        base.worker,
        base.settings.model_copy(update={"max_tokens": chat_tokens}),
        base.history,
        max_chars=base.max_chars,
    )
    conversation = ConversationService(services.stt, chat, services.tts, services.history)
    realtime = RealtimeService(
        conversation,
        services.stt,
        services.realtime.vad,
        settings.realtime,
        settings.vad,
        services.realtime.end_of_turn,
    )
    return dataclasses.replace(services, chat=chat, conversation=conversation, realtime=realtime)


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings isolated in `tmp`, sharing the repo's prepared MODELS_DIR and voices."""
    values: dict[str, object] = {
        "models_dir": REPO / "models",
        "voices_dir": REPO / "voices",
        "outputs_dir": tmp / "outputs",
        "data_dir": tmp / "data",
        # The small LLM keeps the suite within its time; the default Qwen has its own tests
        # (tests/backends/test_embedded_llm.py) and test_api.py serves on it.
        "llm_model": "small",
        "llm_max_tokens": 24,
        "stt_beam_size": 1,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def settings(session_tmp: Path) -> Settings:
    return make_settings(session_tmp)


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.shutdown()


@pytest.fixture(scope="session")
def whisper(services: Services) -> WhisperBackend:
    """Whisper tiny.en: the default STT's engine for what Moonshine does not take (stt_router.py)."""
    backend = getattr(services.stt.backend, "whisper", services.stt.backend)
    assert isinstance(backend, WhisperBackend)
    return backend


@pytest.fixture(scope="session")
def piper(services: Services) -> PiperBackend:
    """Piper's joe, the embedded voices' second voice."""
    pair = services.tts.backend
    assert isinstance(pair, VoicePair)
    joe = pair.voice("joe")
    assert isinstance(joe, PiperBackend)
    return joe


@pytest.fixture(scope="session")
def llm(services: Services) -> LlamaCppChatBackend:
    """The default CPU engine the services run."""
    backend = services.chat.backend
    assert isinstance(backend, LlamaCppChatBackend)
    return backend


@pytest.fixture(scope="session")
def qwen() -> Iterator[LlamaCppChatBackend]:
    """The default LLM (Qwen2.5-Coder-1.5B), for the tests of what the small one cannot do: tools."""
    engine = LlamaCppChatBackend("embedded", 2048, models_dir=REPO / "models")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def transformers_llm(settings: Settings) -> TransformersChatBackend:
    """The transformers engine on the same embedded model (LLM_ENGINE=transformers)."""
    return TransformersChatBackend("small", settings.storage.models_dir, "cpu")


@pytest.fixture(scope="session")
def client(settings: Settings, services: Services) -> Iterator[TestClient]:
    """An in-process client over the real services (the models are shared with other tests)."""
    app = create_app(settings, services)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def clip(name: str) -> bytes:
    return (DATA / name).read_bytes()
