"""The VibeVoice code path, on a tiny random-weight checkpoint built from a config (see
tests/tiny_vibevoice.py) and loaded exactly as the real one is. Checks plumbing, not audio quality."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from backend.app.audio.decode import decode_audio
from backend.app.audio.types import Audio
from backend.app.backends.registry import load_tts
from backend.app.backends.vibevoice import SAMPLE_RATE, VibeVoiceBackend, VibeVoicePrompt
from backend.app.backends.whisper import WhisperBackend
from backend.app.container import Services
from backend.app.core.config import TTSSettings
from backend.app.core.errors import InvalidInputError, ModelLoadError
from backend.app.core.values import SynthesisRequest
from backend.app.core.worker import ModelWorker
from backend.app.main import create_app
from backend.app.services.casts import CastService
from backend.app.services.conversation import ConversationService
from backend.app.services.tts import TTSService
from backend.app.services.voices import VoiceService
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary
from tests.conftest import REPO, make_settings
from tests.tiny_vibevoice import MAX_NEW_TOKENS, build_tiny_vibevoice

HOP = 3200
FIXTURES = REPO / "tests" / ".fixtures"


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return build_tiny_vibevoice(FIXTURES / "tiny-vibevoice", REPO / "models" / "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def vibevoice(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> VibeVoiceBackend:
    settings = make_settings(tmp_path_factory.mktemp("vv"), tts_model_name=str(tiny_dir), tts_device="cpu")
    backend = load_tts(settings)  # the same registry path as TTS_MODEL_NAME=vibevoice/VibeVoice-1.5B-hf
    assert isinstance(backend, VibeVoiceBackend)
    return backend


@pytest.fixture(scope="module")
def joe(vibevoice: VibeVoiceBackend) -> VibeVoicePrompt:
    return vibevoice.prepare_voice(
        decode_audio((REPO / "voices" / "en-Joe_man.wav").read_bytes(), SAMPLE_RATE)
    )


def seeded(backend: VibeVoiceBackend, request: SynthesisRequest) -> np.ndarray:
    torch.manual_seed(1234)
    return backend.synthesize(request).samples


def test_speaks_24khz_audio_in_whole_audio_tokens(vibevoice: VibeVoiceBackend, joe: VibeVoicePrompt) -> None:
    audio = vibevoice.synthesize(SynthesisRequest("Hello there.", voice=joe))
    assert audio.sample_rate == 24_000 and vibevoice.sample_rate == 24_000
    assert len(audio.samples) == MAX_NEW_TOKENS * HOP
    assert audio.samples.dtype == np.float32 and np.abs(audio.samples).max() > 1e-3
    assert vibevoice.supports_cloning and vibevoice.info.device == "cpu (float32)"


def test_the_reference_voice_is_the_speaker_prompt(vibevoice: VibeVoiceBackend, joe: VibeVoicePrompt) -> None:
    # 5.85 s of reference at 24 kHz -> ceil(140,434 / 3,200) = 44 placeholders for the audio tower.
    assert joe.audio_tokens == 44
    inputs = vibevoice.build_inputs("Hello there.", joe)
    audio_token = vibevoice._processor.audio_token_id
    assert int((inputs["input_ids"] == audio_token).sum()) == joe.audio_tokens
    assert inputs["input_values"].shape[-1] == joe.audio_tokens * HOP
    assert "input_values" not in vibevoice.build_inputs("Hello there.", None)
    prompt = vibevoice._processor.tokenizer.decode(inputs["input_ids"][0])
    assert "Voice input:" in prompt and "Speaker 0: Hello there." in prompt
    with_voice = seeded(vibevoice, SynthesisRequest("Hello there.", voice=joe))
    without = seeded(vibevoice, SynthesisRequest("Hello there."))
    assert not np.allclose(with_voice, without, atol=1e-6)


def test_cfg_scale_reaches_the_guidance(vibevoice: VibeVoiceBackend, joe: VibeVoicePrompt) -> None:
    base = seeded(vibevoice, SynthesisRequest("Hello there.", voice=joe, cfg_scale=1.0))
    again = seeded(vibevoice, SynthesisRequest("Hello there.", voice=joe, cfg_scale=1.0))
    stronger = seeded(vibevoice, SynthesisRequest("Hello there.", voice=joe, cfg_scale=2.0))
    np.testing.assert_allclose(base, again, atol=1e-6)
    assert not np.allclose(base, stronger, atol=1e-6)


def test_speed_is_refused_clearly(vibevoice: VibeVoiceBackend) -> None:
    with pytest.raises(InvalidInputError, match="speed"):
        vibevoice.synthesize(SynthesisRequest("Hi.", speed=1.5))


def test_generation_budget_grows_with_text_and_respects_the_checkpoint_cap(
    vibevoice: VibeVoiceBackend,
) -> None:
    assert vibevoice.max_new_tokens("Hi.") == MAX_NEW_TOKENS  # the tiny checkpoint's cap
    vibevoice_uncapped = object.__new__(VibeVoiceBackend)
    vibevoice_uncapped._max_new_tokens_cap = 4096
    assert vibevoice_uncapped.max_new_tokens("x" * 100) < vibevoice_uncapped.max_new_tokens("x" * 200)
    # Chinese is spoken at ~4-5 characters a second: ~1.7 audio tokens per character at least.
    assert vibevoice_uncapped.max_new_tokens("你" * 100) >= 170 + 40


def test_a_broken_checkpoint_is_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="could not load the VibeVoice model"):
        VibeVoiceBackend(str(broken), tmp_path, device="cpu")


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    voices = tmp_path / "voices"
    voices.mkdir()
    shutil.copy(REPO / "voices" / "en-Joe_man.wav", voices)
    return voices


def test_service_caches_the_prepared_voice_by_content(vibevoice: VibeVoiceBackend, voices_dir: Path) -> None:
    cache: SpeakerCache[object] = SpeakerCache(4)
    service = TTSService(
        vibevoice,
        ModelWorker("tts", 2),
        VoiceLibrary(voices_dir),
        cache,
        TTSSettings(
            max_chars=5000, segment_threshold_chars=150, segment_silence_ms=200, default_cfg_scale=1.3
        ),
    )

    async def speak() -> object:
        return await service.synthesize("Hello there.", voice="Joe")

    first = asyncio.run(speak())
    assert (cache.stats().hits, cache.stats().misses) == (0, 1)
    asyncio.run(speak())
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)
    # Default voice (the first found) is used when none is named, through the same cache entry.
    asyncio.run(service.synthesize("Hello there."))
    assert cache.stats().hits == 2
    # An edited file is a different voice: never served stale.
    clip = voices_dir / "en-Joe_man.wav"
    clip.write_bytes(clip.read_bytes()[:-32000])
    asyncio.run(speak())
    assert (cache.stats().hits, cache.stats().misses) == (2, 2)
    assert first.voice is not None and first.voice.file == "en-Joe_man.wav"  # type: ignore[attr-defined]
    service.worker.shutdown()


def test_long_text_is_synthesised_in_segments(vibevoice: VibeVoiceBackend, voices_dir: Path) -> None:
    settings = TTSSettings(
        max_chars=5000, segment_threshold_chars=40, segment_silence_ms=100, default_cfg_scale=1.0
    )
    service = TTSService(
        vibevoice, ModelWorker("tts", 2), VoiceLibrary(voices_dir), SpeakerCache(4), settings
    )
    text = "The first sentence is short. The second one is short too. And here is a third."
    result = asyncio.run(service.synthesize(text))
    assert result.segments == 3
    assert result.audio.sample_rate == 24_000
    speech = 3 * MAX_NEW_TOKENS * HOP
    assert speech < len(result.audio.samples) <= speech + 2 * int(0.1 * 24_000)
    service.worker.shutdown()


def test_its_words_are_placed_by_forced_alignment(
    vibevoice: VibeVoiceBackend, voices_dir: Path, whisper: WhisperBackend
) -> None:
    """VibeVoice gives no durations: the service has the STT's Whisper align the text on the speech
    (the tiny model speaks noise, so this proves the path, not the placing: every word, in order,
    within its segment's audio, the second segment's after the gap)."""
    settings = TTSSettings(max_chars=5000, segment_threshold_chars=40, segment_silence_ms=100)
    service = TTSService(
        vibevoice, ModelWorker("tts", 2), VoiceLibrary(voices_dir), SpeakerCache(4), settings, aligner=whisper
    )
    text = "The first sentence is short. The second one is short too."

    async def pieces() -> list[Audio]:
        return [chunk async for chunk in (await service.speak(text)).audio()]

    first, second = asyncio.run(pieces())
    assert vibevoice.synthesize(SynthesisRequest("Hi.")).words is None
    assert first.words is not None and second.words is not None
    assert [w.word for w in (*first.words, *second.words)] == text.split()
    for piece in (first, second):
        starts = [w.start for w in piece.words or ()]
        assert starts == sorted(starts) and (piece.words or ())[-1].end <= piece.duration
    assert second.words[0].start >= 0.1  # after the gap the second segment starts with
    whole = asyncio.run(service.synthesize(text)).audio
    assert whole.words is not None and len(whole.words) == len(text.split())
    service.worker.shutdown()


@pytest.fixture
def vv_client(tiny_dir: Path, voices_dir: Path, tmp_path: Path, services: Services) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, tts_model_name=str(tiny_dir), tts_device="cpu", voices_dir=voices_dir)
    tts_backend = load_tts(settings)
    library = VoiceLibrary(voices_dir)
    tts = TTSService(tts_backend, ModelWorker("tts", 2), library, SpeakerCache(50), services.tts.settings)
    vv_services = dataclasses.replace(
        services,
        tts=tts,
        voices=VoiceService(library, tts.worker, tts_backend.sample_rate),
        casts=CastService(services.casts.table, tts),
    )
    with TestClient(create_app(settings, vv_services), raise_server_exceptions=False) as client:
        yield client
    tts.worker.shutdown()


def test_http_tts_with_a_cloned_voice(vv_client: TestClient) -> None:
    info = vv_client.get("/speaker_info").json()
    assert info["supports_cloning"] is True
    response = vv_client.post("/tts", json={"text": "Hello there.", "voice": "Joe", "cfg_scale": 1.5})
    assert response.status_code == 200, response.text
    assert response.headers["x-voice"] == "en-Joe_man.wav"
    assert response.headers["x-sample-rate"] == "24000"
    assert decode_audio(response.content).sample_rate == 24_000
    by_path = vv_client.post("/tts", json={"text": "Hello again.", "speaker_voice_path": "en-Joe_man.wav"})
    assert by_path.status_code == 200
    cache = vv_client.get("/speaker_info").json()["cache"]
    assert cache["hits"] >= 1 and cache["misses"] == 1
    refused = vv_client.post("/tts", json={"text": "Hi.", "speaker_voice_path": "../../etc/passwd"})
    assert refused.status_code == 400
    # VibeVoice has no rate control: the service changes the tempo of what it synthesised.
    fast = vv_client.post("/tts", json={"text": "Hi.", "speed": 1.5})
    assert fast.status_code == 200, fast.text


def test_http_dialogue_in_two_cloned_voices(vv_client: TestClient, voices_dir: Path) -> None:
    shutil.copy(REPO / "voices" / "en-Eve_woman.wav", voices_dir)
    dialogue = vv_client.get("/speaker_info").json()["dialogue"]
    assert dialogue["native"] is True and dialogue["max_speakers_per_window"] == 4
    assert dialogue["distinct_voices"] is True
    text = "Speaker 1: Hi there.\nSpeaker 2: Hello.\nSpeaker 1: How are you?"
    response = vv_client.post("/tts", json={"text": text, "speakers": {"2": "Eve"}})
    assert response.status_code == 200, response.text
    assert response.headers["x-turns"] == "3" and response.headers["x-segments"] == "1"  # one window
    assert response.headers["x-shared-voice"] == "false"
    # Speaker 1 has no mapping: the default cast's first voice Speaker 2 does not already use.
    assert response.headers["x-speakers"] == "Speaker%201=en-Joe_man.wav,Speaker%202=en-Eve_woman.wav"
    assert decode_audio(response.content).sample_rate == 24_000
    three = "Speaker 1: A.\nSpeaker 2: B.\nSpeaker 3: C."  # three speakers, two voices
    assert vv_client.post("/tts", json={"text": three}).status_code == 422


def test_a_cast_is_prepared_when_saved_and_at_start(vv_client: TestClient, voices_dir: Path) -> None:
    shutil.copy(REPO / "voices" / "en-Eve_woman.wav", voices_dir)
    before = vv_client.get("/speaker_info").json()["cache"]
    saved = vv_client.put("/casts/duo", json={"speakers": {"1": "Joe", "2": "Eve"}})
    assert saved.status_code == 201, saved.text
    try:
        cache = vv_client.get("/speaker_info").json()["cache"]
        assert cache["size"] == before["size"] + 2  # both voices prepared on saving
        spoken = vv_client.post("/tts", json={"text": "Speaker 1: Hi.\nSpeaker 2: Hello.", "cast": "duo"})
        assert spoken.status_code == 200, spoken.text
        after = vv_client.get("/speaker_info").json()["cache"]
        assert after["misses"] == cache["misses"] and after["hits"] == cache["hits"] + 2
        # At start-up: a fresh cache over the same casts table is filled from the stored casts.
        app_services = vv_client.app.state.gate.services  # type: ignore[attr-defined]
        tts = app_services.tts
        fresh = TTSService(tts.backend, tts.worker, tts.voices, SpeakerCache(8), tts.settings)
        CastService(app_services.casts.table, fresh).preload()
        assert fresh.cache.stats().size == 2
    finally:
        vv_client.delete("/casts/duo")


def test_default_and_preload_voices_are_prepared_at_start(
    vibevoice: VibeVoiceBackend, voices_dir: Path
) -> None:
    shutil.copy(REPO / "voices" / "en-Eve_woman.wav", voices_dir)
    cache: SpeakerCache[object] = SpeakerCache(4)
    library = VoiceLibrary(voices_dir, default_voice="en-Joe_man.wav")
    service = TTSService(
        vibevoice,
        ModelWorker("tts", 1),
        library,
        cache,
        TTSSettings(
            max_chars=5000, segment_threshold_chars=150, segment_silence_ms=200, default_cfg_scale=1.0
        ),
    )
    service.preload(["Eve", "Nobody"])  # an unknown name is skipped with a warning, not fatal
    assert (cache.stats().size, cache.stats().misses) == (2, 2)
    asyncio.run(service.synthesize("Hi.", voice="Eve"))
    asyncio.run(service.synthesize("Hi."))  # the default voice, Joe
    assert (cache.stats().hits, cache.stats().misses) == (2, 2)
    service.worker.shutdown()


def test_piper_does_not_preload(services: Services) -> None:
    before = services.tts.cache.stats()
    services.tts.preload(["Joe"])
    assert services.tts.cache.stats() == before


def test_a_turn_in_chinese_is_answered_in_a_chinese_library_voice(
    vv_client: TestClient, voices_dir: Path, services: Services
) -> None:
    """A cloning engine speaks Chinese itself; what changes with the user's language is the voice:
    a `zh-*` clip from the library when the default is another language's. (The clip here is an
    English recording named zh-: it is still just a reference clip.)"""
    shutil.copy(REPO / "voices" / "en-Joe_man.wav", voices_dir / "zh-Xinran_woman.wav")
    app_services = vv_client.app.state.gate.services  # type: ignore[attr-defined]
    tts = app_services.tts
    assert tts.backend.languages == ("en", "zh")
    assert tts.voice_for_language("zh") == "zh-Xinran_woman.wav"
    assert tts.voice_for_language("en") is None  # the default (en-Joe) already is
    assert tts.voice_for_language("fr") is None  # none in the library: the default
    assert tts.voice_for_language(None) is None
    assert services.tts.voice_for_language("zh") is None  # a fixed-voice engine has no choice
    conversation = ConversationService(services.stt, services.chat, tts, services.history)
    assert conversation._reply_voice("no-such-conversation", "zh") == "zh-Xinran_woman.wav"
