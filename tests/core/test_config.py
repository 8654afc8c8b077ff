from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.app.core.config import Settings


def test_defaults_match_the_documented_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "STT_MODEL_NAME", "LLM_BACKEND", "API_KEY", "CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8000)
    assert s.stt.model_name == s.tts.model_name == "embedded"
    assert (s.stt.device, s.stt.compute_type, s.llm.backend) == ("auto", "auto", "local")
    assert (s.llm.max_tokens, s.tts.default_cfg_scale, s.voices.cache_size) == (256, 1.0, 50)
    assert (s.tts.segment_threshold_chars, s.tts.segment_silence_ms) == (150, 200)
    assert (s.server.max_upload_mb, s.stt.max_audio_seconds, s.tts.max_chars) == (25, 600, 5000)
    assert s.voices.dir == Path("voices") and s.storage.data_dir == Path("data")
    assert s.server.api_key is None and s.server.cors_origins == []


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("LLM_BACKEND", "openai")
    monkeypatch.setenv("LLM_API_KEY", "sk-test")
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("API_KEY", "secret")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.server.port == 9001 and s.llm.backend == "openai"
    assert s.llm.api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(s)
    assert s.server.cors_origins == ["http://a.example", "http://b.example"]
    assert s.server.api_key is not None and s.server.api_key.get_secret_value() == "secret"


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_SILENCE_MS", raising=False)
    env = tmp_path / ".env"
    env.write_text("SEGMENT_SILENCE_MS=350\nSYSTEM_PROMPT=Be brief.\n")
    s = Settings(_env_file=env)  # type: ignore[call-arg]
    assert s.tts.segment_silence_ms == 350 and s.llm.system_prompt == "Be brief."


def test_empty_api_key_means_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    assert Settings(_env_file=None).server.api_key is None  # type: ignore[call-arg]


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
    assert settings.openai.voices == {"alloy": "en-Eve_woman.wav", "onyx": "Joe"}
    assert settings.openai.model_aliases == {"llama3": "chat", "whisper-large": "stt"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("OPENAI_VOICES", "alloy"), ("OPENAI_VOICES", "=Joe"), ("OPENAI_MODEL_ALIASES", "llama3=llm")],
)
def test_malformed_openai_tables_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


REPO = Path(__file__).resolve().parents[2]


def test_every_variable_has_one_field_and_one_row_in_the_readme() -> None:
    from backend.app.core.config import ENV

    fields = {
        (name, field)
        for name in Settings.model_fields
        for field in type(getattr(Settings(), name)).model_fields
    }
    assert sorted(ENV.values()) == sorted(fields)  # each field is read from exactly one variable
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (REPO / "README.md").read_text(), re.M))
    assert documented == set(ENV)


def test_a_dotenv_of_flat_names_fills_every_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "PORT": "9100",
        "STT_MODEL_NAME": "base-multilingual",
        "STT_TIMEOUT_S": "12",
        "LLM_MAX_TOKENS": "64",
        "TTS_ENGINE": "piper",
        "MAX_TTS_CHARS": "900",
        "VOICES_MAX_COUNT": "7",
        "DATA_DIR": "/srv/data",
        "QUEUE_SIZE": "2",
        "VAD_THRESHOLD": "0.6",
        "WS_MAX_UTTERANCE_S": "12",
        "WS_MAX_SESSIONS": "3",
        "OPENAI_VOICES": "alloy=Joe",
    }
    for name in values:
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / ".env"
    env.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    s = Settings(_env_file=env)  # type: ignore[call-arg]
    assert s.server.port == 9100 and s.stt.model_name == "base-multilingual" and s.stt.timeout_s == 12
    assert s.llm.max_tokens == 64 and s.tts.engine == "piper" and s.tts.max_chars == 900
    assert s.voices.max_count == 7 and s.storage.data_dir == Path("/srv/data") and s.limits.queue_size == 2
    assert s.vad.threshold == 0.6 and s.vad.max_utterance_s == 12 and s.realtime.max_sessions == 3
    assert s.openai.voices == {"alloy": "Joe"}
    monkeypatch.setenv("QUEUE_SIZE", "5")  # the environment wins over .env, keyword arguments over both
    assert Settings(_env_file=env).limits.queue_size == 5  # type: ignore[call-arg]
    assert Settings(_env_file=env, queue_size=1).limits.queue_size == 1  # type: ignore[call-arg]


def test_keyword_arguments_take_variable_names_or_sections() -> None:
    from backend.app.core.config import TTSSettings

    s = Settings(_env_file=None, tts=TTSSettings(segment_silence_ms=50), max_tts_chars=100)  # type: ignore[call-arg]
    assert (s.tts.segment_silence_ms, s.tts.max_chars) == (50, 100)


def test_the_replaced_backends_variable_names_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_LENGTH_THRESHOLD", "300")
    monkeypatch.setenv("MAX_CACHE_SIZE", "7")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.tts.segment_threshold_chars == 300 and settings.voices.cache_size == 7
    monkeypatch.setenv("SEGMENT_THRESHOLD_CHARS", "200")  # the current name wins
    assert Settings(_env_file=None).tts.segment_threshold_chars == 200  # type: ignore[call-arg]
