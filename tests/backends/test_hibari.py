"""The hibari voice (TTS_MODEL_NAME=hibari), loaded through the registry: a TTS -> STT round trip by
word error rate, speed, the length estimate, and the service speaking through it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.backends import registry
from backend.app.backends.hibari import HibariBackend
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, SYNTH_WER, make_settings

SENTENCES = [
    SENTENCE,
    "Please turn off the lights in the kitchen before you go to bed.",
    "We will meet at the library on Thursday afternoon.",
]


@pytest.fixture(scope="module")
def hibari(tmp_path_factory: pytest.TempPathFactory) -> HibariBackend:
    settings = make_settings(tmp_path_factory.mktemp("hibari"), tts_model_name="hibari")
    backend = registry.load_tts(settings)
    assert isinstance(backend, HibariBackend)
    return backend


@pytest.mark.parametrize("text", SENTENCES)
def test_what_hibari_says_is_heard(hibari: HibariBackend, services: Services, text: str) -> None:
    audio = hibari.synthesize(SynthesisRequest(text))
    assert audio.sample_rate == 24000 and audio.duration > 1
    heard = services.stt.backend.transcribe(resample(audio, 16000), TranscribeOptions(language="en")).text
    assert word_error_rate(text, heard) <= SYNTH_WER, heard


def test_speed_changes_the_length_and_the_estimate_is_near(hibari: HibariBackend) -> None:
    text = SENTENCES[1]
    normal = hibari.synthesize(SynthesisRequest(text)).duration
    fast = hibari.synthesize(SynthesisRequest(text, speed=1.5)).duration
    assert fast < normal * 0.8
    assert 0.6 < hibari.estimate_seconds(text) / normal < 1.5


def test_nothing_to_say_is_silence_not_an_error(hibari: HibariBackend) -> None:
    assert hibari.synthesize(SynthesisRequest("...")).duration < 0.5


def test_the_tts_service_speaks_through_hibari(services: Services, tmp_path: Path) -> None:
    from backend.app.core.metrics import ServiceMetrics
    from backend.app.core.worker import ModelWorker
    from backend.app.services.tts import TTSService
    from backend.app.voices.cache import SpeakerCache

    settings = make_settings(tmp_path, tts_model_name="hibari")
    tts = TTSService(
        registry.load_tts(settings),
        ModelWorker("tts-hibari", 4, 60),
        services.tts.voices,
        SpeakerCache[object](4),
        settings.tts,
        ServiceMetrics(),
    )

    async def spoken() -> Audio:
        return await (await tts.speak(SENTENCES[2])).collect()

    try:
        audio = asyncio.run(spoken())
    finally:
        tts.worker.shutdown()
    heard = services.stt.backend.transcribe(resample(audio, 16000), TranscribeOptions(language="en")).text
    assert word_error_rate(SENTENCES[2], heard) <= SYNTH_WER, heard
