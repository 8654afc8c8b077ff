"""Multi-speaker scripts on VibeVoice's real loading path (the tiny random checkpoint): each window is
one generation whose prompt holds every one of its speakers' voices once, turns in script order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from backend.app.audio.decode import decode_audio
from backend.app.backends.registry import load_tts
from backend.app.backends.vibevoice import VibeVoiceBackend
from backend.app.core.config import TTSSettings
from backend.app.core.errors import InvalidInputError
from backend.app.core.worker import ModelWorker
from backend.app.services.tts import TTSService
from backend.app.text.script import parse_script
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary
from tests.conftest import REPO, make_settings
from tests.tiny_vibevoice import build_tiny_vibevoice

HOP = 3200
FIXTURES = REPO / "tests" / ".fixtures"
# Four voices of different lengths: each speaker's prompt is recognisable by its token count.
CLIPS = {"en-Joe_man.wav": ("en-Joe_man.wav", 5.85), "en-Eve_woman.wav": ("en-Eve_woman.wav", 9.0)}
CUTS = {"en-Ann_woman.wav": ("en-Eve_woman.wav", 4.0), "en-Bob_man.wav": ("en-Joe_man.wav", 3.2)}


@pytest.fixture(scope="module")
def vibevoice(tmp_path_factory: pytest.TempPathFactory) -> VibeVoiceBackend:
    tiny = build_tiny_vibevoice(FIXTURES / "tiny-vibevoice", REPO / "models" / "smollm2-135m-instruct")
    settings = make_settings(tmp_path_factory.mktemp("vvd"), tts_model_name=str(tiny), tts_device="cpu")
    backend = load_tts(settings)
    assert isinstance(backend, VibeVoiceBackend)
    return backend


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    voices = tmp_path_factory.mktemp("voices")
    for name, (source, seconds) in {**CLIPS, **CUTS}.items():
        samples, rate = sf.read(REPO / "voices" / source, dtype="float32")
        sf.write(voices / name, samples[: int(seconds * rate)], rate)
    return voices


@pytest.fixture
def service(vibevoice: VibeVoiceBackend, voices_dir: Path) -> Iterator[TTSService]:
    settings = TTSSettings(max_chars=5000, dialogue_window_chars=80, segment_silence_ms=100)
    library = VoiceLibrary(voices_dir, default_voice="en-Joe_man.wav")
    tts = TTSService(vibevoice, ModelWorker("tts", 2), library, SpeakerCache(8), settings)
    yield tts
    tts.worker.shutdown()


@pytest.fixture
def generations(vibevoice: VibeVoiceBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The inputs of every real `generate` call (the model still runs)."""
    seen: list[dict[str, Any]] = []
    real = vibevoice._model.generate

    def recording(**inputs: Any) -> Any:
        seen.append(inputs)
        return real(**inputs)

    monkeypatch.setattr(vibevoice._model, "generate", recording)
    return seen


def tokens_of(vibevoice: VibeVoiceBackend, voice: str, voices_dir: Path) -> int:
    return vibevoice.prepare_voice(decode_audio((voices_dir / voice).read_bytes(), 24_000)).audio_tokens


def prompt_text(vibevoice: VibeVoiceBackend, inputs: dict[str, Any]) -> str:
    return str(vibevoice._processor.tokenizer.decode(inputs["input_ids"][0]))


def speak(service: TTSService, text: str, speakers: dict[str, str] | None = None) -> tuple[Any, list[Any]]:
    script = parse_script(text, {k.lower() for k in speakers or {}})
    assert script is not None

    async def run() -> tuple[Any, list[Any]]:
        stream = await service.speak_script(script, speakers)
        events = [event async for event in stream]
        return stream, events

    return asyncio.run(run())


def test_two_speakers_share_one_generation_each_prompt_once(
    service: TTSService, vibevoice: VibeVoiceBackend, generations: list[dict[str, Any]], voices_dir: Path
) -> None:
    text = "Speaker 1: Hi.\nSpeaker 2: Hello.\nSpeaker 1: Bye now."
    stream, events = speak(service, text, {"1": "Joe", "2": "en-Eve_woman.wav"})
    assert len(generations) == 1 and len(events) == 1  # one window, one generation
    inputs = generations[0]
    joe, eve = (tokens_of(vibevoice, v, voices_dir) for v in ("en-Joe_man.wav", "en-Eve_woman.wav"))
    audio_token = vibevoice._processor.audio_token_id
    assert int((inputs["input_ids"] == audio_token).sum()) == joe + eve  # Joe once, though he speaks twice
    assert inputs["input_values"].shape[0] == 2
    assert [int(n) for n in inputs["padding_mask"].sum(dim=-1)] == [
        int(vibevoice.prepare_voice(decode_audio((voices_dir / v).read_bytes(), 24_000)).padding_mask.sum())
        for v in ("en-Joe_man.wav", "en-Eve_woman.wav")
    ]
    prompt = prompt_text(vibevoice, inputs)
    lines = [line.strip() for line in prompt.split("Text input:")[1].splitlines() if "Speaker" in line]
    assert lines == ["Speaker 0: Hi.", "Speaker 1: Hello.", "Speaker 0: Bye now."]  # script order
    assert stream.cast.members["1"].applied == "en-Joe_man.wav"
    assert stream.cast.members["2"].applied == "en-Eve_woman.wav"
    assert events[0].turns == (0, 1, 2) and events[0].speakers == ("Speaker 1", "Speaker 2")


def test_four_speakers_and_the_cache_hits_per_speaker(
    service: TTSService, vibevoice: VibeVoiceBackend, generations: list[dict[str, Any]]
) -> None:
    text = "A: One.\nB: Two.\nC: Three.\nD: Four."
    # No mapping: the default cast, the default voice first, each library voice once.
    stream, _ = speak(service, text)
    assert [m.applied for m in stream.cast.members.values()] == [
        "en-Joe_man.wav",
        "en-Ann_woman.wav",
        "en-Bob_man.wav",
        "en-Eve_woman.wav",
    ]
    inputs = generations[0]
    assert inputs["input_values"].shape[0] == 4
    assert prompt_text(vibevoice, inputs).count("<|vision_start|>") == 4 + 1  # 4 prompts + speech start
    stats = service.cache.stats()
    assert (stats.hits, stats.misses) == (0, 4)
    speak(service, text)
    stats = service.cache.stats()
    assert (stats.hits, stats.misses) == (4, 4)  # one hit per speaker on the second request


def test_windows_split_at_turn_boundaries(service: TTSService, generations: list[dict[str, Any]]) -> None:
    # 80-character windows: these turns (30-45 characters) pack two or so to a window, never cut.
    turns = [
        "Speaker 1: This is the first turn of the show.",
        "Speaker 2: And this is the second turn here.",
        "Speaker 1: A third turn follows after that.",
        "Speaker 2: Then a fourth one closes it.",
    ]
    stream, events = speak(service, "\n".join(turns))
    assert len(events) == len(generations) >= 2
    seen = [turn for event in events for turn in event.turns]
    assert seen == [0, 1, 2, 3]  # every turn once, in order, each inside one window
    for event in events:
        assert all(len(t.split(": ", 1)[1]) <= 80 for t in event.text.splitlines())
    assert stream.segments == len(events)


def test_a_turn_longer_than_a_window_is_cut_at_sentences(
    service: TTSService, generations: list[dict[str, Any]]
) -> None:
    long_turn = "This sentence has some words. " * 6  # 180 characters, the window is 80
    _, events = speak(service, f"Speaker 1: Short.\nSpeaker 2: {long_turn}")
    assert events[0].turns == (0, 1)  # the short turn shares the first window
    assert all(e.turns == (1,) for e in events[1:]) and len(events) >= 3


def test_five_speakers_are_regrouped_into_windows_of_four(
    service: TTSService, vibevoice: VibeVoiceBackend, generations: list[dict[str, Any]], voices_dir: Path
) -> None:
    extra = voices_dir / "en-Cy_man.wav"
    samples, rate = sf.read(REPO / "voices" / "en-Joe_man.wav", dtype="float32")
    sf.write(extra, samples[: int(4.5 * rate)], rate)
    try:
        text = "\n".join(f"Speaker {n}: Hi." for n in range(1, 6))
        _, events = speak(service, text)
        assert [e.turns for e in events] == [(0, 1, 2, 3), (4,)]
        assert [g["input_values"].shape[0] for g in generations] == [4, 1]
    finally:
        extra.unlink()


def test_too_few_voices_for_the_speakers_is_a_clear_error(service: TTSService) -> None:
    text = "\n".join(f"Speaker {n}: Hi." for n in range(1, 6))  # 5 speakers, 4 voices
    with pytest.raises(InvalidInputError, match="map each speaker to a voice"):
        speak(service, text)


def test_dialogue_audio_is_one_continuous_24khz_signal(service: TTSService) -> None:
    stream, events = speak(service, "Speaker 1: Hi.\nSpeaker 2: Hello.")
    audio = events[0].audio
    assert audio.sample_rate == 24_000 and np.abs(audio.samples).max() > 1e-3
    assert stream.cast.shared_voice is False
