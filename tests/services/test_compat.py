from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backend.app.api.v1.compat import STOCK_VOICES, ModelCatalog, VoiceMap
from backend.app.core.errors import InvalidInputError, ModelNotFoundError
from backend.app.voices.library import VoiceLibrary

REPO = Path(__file__).parent.parent.parent
IDS = {"stt": "whisper-tiny.en", "tts": "piper-en_US-joe-medium", "chat": "Qwen/Qwen2.5-1.5B-Instruct"}


def test_each_stage_answers_to_its_id_and_the_stock_names() -> None:
    catalog = ModelCatalog(IDS)  # type: ignore[arg-type]
    assert [m.id for m in catalog.models()] == list(IDS.values())
    assert catalog.resolve("whisper-1", "stt").id == "whisper-tiny.en"
    assert catalog.resolve("WHISPER-TINY.EN", "stt").id == "whisper-tiny.en"
    assert catalog.resolve("tts-1-hd", "tts").id == "piper-en_US-joe-medium"
    assert catalog.resolve("gpt-4o-mini", "chat").id == "Qwen/Qwen2.5-1.5B-Instruct"
    assert catalog.lookup("qwen/qwen2.5-1.5b-instruct").stage == "chat"


def test_unknown_names_are_404_and_other_stages_names_are_400() -> None:
    catalog = ModelCatalog(IDS)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError) as unknown:
        catalog.resolve("llama3", "chat")
    assert unknown.value.param == "model" and unknown.value.status_code == 404
    with pytest.raises(InvalidInputError, match="stt model") as wrong_stage:
        catalog.resolve("tts-1", "stt")
    assert wrong_stage.value.param == "model"


def test_configured_aliases_are_accepted_for_their_stage_only() -> None:
    catalog = ModelCatalog(IDS, {"llama3": "chat"})  # type: ignore[arg-type]
    assert catalog.resolve("llama3", "chat").id == "Qwen/Qwen2.5-1.5B-Instruct"
    with pytest.raises(InvalidInputError):
        catalog.resolve("llama3", "tts")


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    for name in ("en-Joe_man.wav", "en-Eve_woman.wav"):
        shutil.copy(REPO / "voices" / name, tmp_path)
    return VoiceLibrary(tmp_path, default_voice="en-Joe_man.wav")


def test_stock_voices_map_by_gender_and_library_names_win(library: VoiceLibrary, tmp_path: Path) -> None:
    voices = VoiceMap(library)
    assert voices.resolve("nova") == "en-Eve_woman.wav"
    assert voices.resolve("Onyx") == "en-Joe_man.wav"
    assert voices.resolve("alloy") == "en-Joe_man.wav"  # neutral: the default voice
    assert voices.resolve("eve") == "en-Eve_woman.wav"  # a library voice by its name
    shutil.copy(REPO / "voices" / "en-Joe_man.wav", tmp_path / "en-Nova_man.wav")
    assert voices.resolve("nova") == "en-Nova_man.wav"  # a library voice named like a stock one
    assert set(voices.table()) == set(STOCK_VOICES)


def test_overrides_come_first_and_must_name_library_voices(library: VoiceLibrary) -> None:
    voices = VoiceMap(library, {"Alloy": "Eve", "custom": "en-Joe_man.wav"})
    assert voices.resolve("alloy") == "en-Eve_woman.wav"
    assert voices.resolve("custom") == "en-Joe_man.wav"
    assert voices.table()["custom"] == "en-Joe_man.wav"
    with pytest.raises(InvalidInputError, match="OPENAI_VOICES") as bad:
        VoiceMap(library, {"echo": "Nobody"}).resolve("echo")
    assert bad.value.param == "voice"


def test_unknown_or_empty_voices_are_refused(library: VoiceLibrary) -> None:
    voices = VoiceMap(library)
    for name in ("bob", " "):
        with pytest.raises(InvalidInputError) as caught:
            voices.resolve(name)
        assert caught.value.param == "voice"


def test_without_library_voices_stock_names_mean_the_engines_own(tmp_path: Path) -> None:
    voices = VoiceMap(VoiceLibrary(tmp_path / "empty"))
    assert voices.resolve("shimmer") is None
