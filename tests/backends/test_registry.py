"""The engine registry: which engine the settings select, and what each one declares."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.app.backends import registry
from backend.app.core.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "stage", "expected"),
    [
        ({}, "stt", "faster-whisper"),  # Moonshine beside it: registry.pairs_moonshine
        ({"stt_model_name": "moonshine"}, "stt", "moonshine"),
        ({}, "llm", "llama.cpp"),  # the embedded Qwen GGUF on llama.cpp
        ({"llm_model": "small"}, "llm", "llama.cpp"),  # no CUDA here: SmolLM2's GGUF on llama.cpp
        ({"llm_model": "models/qwen.Q4_K_M.gguf"}, "llm", "llama.cpp"),
        ({"llm_model": "models/qwen.Q4_K_M.gguf", "llm_device": "cuda"}, "llm", "transformers"),
        ({"llm_model": "HuggingFaceTB/SmolLM2-360M-Instruct"}, "llm", "transformers"),
        ({"llm_model": "small", "llm_device": "cuda"}, "llm", "transformers"),
        ({"llm_device": "cuda"}, "llm", "llama.cpp"),  # the embedded Qwen is a GGUF for llama.cpp
        ({"llm_engine": "transformers"}, "llm", "transformers"),
        ({"llm_backend": "openai"}, "llm", "openai"),
        ({}, "tts", "embedded"),
        ({"tts_model_name": "joe"}, "tts", "piper"),
        ({"tts_model_name": "voices/my.onnx"}, "tts", "piper"),
        ({"tts_model_name": "zh-baker"}, "tts", "baker-zh"),
        ({"tts_model_name": "hibari"}, "tts", "hibari"),
        ({"tts_model_name": "vibevoice/VibeVoice-1.5B-hf"}, "tts", "vibevoice"),
        ({"tts_model_name": "voices/my.onnx", "tts_engine": "vibevoice"}, "tts", "vibevoice"),
        ({"llm_backend": "openai", "llm_engine": "transformers"}, "llm", "transformers"),
    ],
)
def test_auto_infers_and_an_explicit_engine_wins(
    values: dict[str, object], stage: str, expected: str
) -> None:
    assert registry.engine(stage, settings(**values)).name == expected  # type: ignore[arg-type]


def test_an_unknown_engine_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="tts_engine"):
        settings(tts_engine="espeak")


def test_every_engine_module_declares_load_and_model_files() -> None:
    for engines in registry.ENGINES.values():
        for engine in engines:
            module = importlib.import_module(engine.module)
            assert callable(module.load) and callable(module.model_files), engine.name


def test_only_local_models_have_files_to_check(tmp_path: Path) -> None:
    keys = [m.key for m in registry.configured_models(settings(models_dir=tmp_path))]
    assert keys == [
        "whisper-tiny.en",
        "moonshine-base-en",
        "qwen2.5-coder-1.5b-instruct-gguf",
        "embedded-voices",
    ]
    remote = settings(models_dir=tmp_path, llm_backend="openai", tts_model_name="vibevoice/VibeVoice-1.5B-hf")
    assert [m.key for m in registry.configured_models(remote)] == ["whisper-tiny.en", "moonshine-base-en"]
    assert not registry.engine("llm", remote).local
