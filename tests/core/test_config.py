from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.app.core.config import Settings


def test_defaults_match_the_documented_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "STT_MODEL_NAME", "LLM_BACKEND", "API_KEY", "CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.stt_model_name == s.tts_model_name == "embedded"
    assert (s.stt_device, s.stt_compute_type, s.llm_backend) == ("auto", "auto", "local")
    assert (s.llm_max_tokens, s.default_cfg_scale, s.speaker_cache_size) == (256, 1.0, 50)
    assert (s.segment_threshold_chars, s.segment_silence_ms) == (150, 200)
    assert (s.max_upload_mb, s.max_audio_seconds, s.max_tts_chars) == (25, 600, 5000)
    assert s.voices_dir == Path("voices") and s.data_dir == Path("data")
    assert s.api_key is None and s.cors_origins == []


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("LLM_BACKEND", "openai")
    monkeypatch.setenv("LLM_API_KEY", "sk-test")
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("API_KEY", "secret")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.port == 9001 and s.llm_backend == "openai"
    assert s.llm_api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(s)
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert s.api_key is not None and s.api_key.get_secret_value() == "secret"


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_SILENCE_MS", raising=False)
    env = tmp_path / ".env"
    env.write_text("SEGMENT_SILENCE_MS=350\nSYSTEM_PROMPT=Be brief.\n")
    s = Settings(_env_file=env)  # type: ignore[call-arg]
    assert s.segment_silence_ms == 350 and s.system_prompt == "Be brief."


def test_empty_api_key_means_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    assert Settings(_env_file=None).api_key is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEFAULT_CFG_SCALE", "3"),
        ("PORT", "0"),
        ("LLM_BACKEND", "llama"),
        ("MAX_UPLOAD_MB", "-1"),
        ("STT_DEVICE", "tpu"),
    ],
)
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_openai_voice_and_model_tables_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_VOICES", "Alloy=en-Eve_woman.wav, onyx = Joe ,")
    monkeypatch.setenv("OPENAI_MODEL_ALIASES", "llama3=chat,whisper-large=stt")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.openai_voices == {"alloy": "en-Eve_woman.wav", "onyx": "Joe"}
    assert settings.openai_model_aliases == {"llama3": "chat", "whisper-large": "stt"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("OPENAI_VOICES", "alloy"), ("OPENAI_VOICES", "=Joe"), ("OPENAI_MODEL_ALIASES", "llama3=llm")],
)
def test_malformed_openai_tables_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]
