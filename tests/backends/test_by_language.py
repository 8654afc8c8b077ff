"""A voice per language (TTS_CHINESE_MODEL_NAME): the embedded English Piper beside the Mandarin
voice, each piece of text spoken by the voice of its script, checked by ear (transcribed back by
the multilingual Whisper base). Needs the Mandarin voice prepared (make zh-voice); skipped, saying
so, otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from backend.app.audio.decode import resample
from backend.app.backends import registry
from backend.app.backends.baker_zh import FILES
from backend.app.backends.by_language import LanguageRouter, check_spoken
from backend.app.backends.piper import PiperBackend, espeak_language
from backend.app.backends.whisper import WhisperBackend
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, ModelLoadError
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.services.tts import TTSService
from backend.app.text.wer import character_error_rate, word_error_rate
from tests.conftest import REPO, make_settings

VOICE = REPO / "models" / "zh-baker"
if not all((VOICE / name).is_file() for name in FILES):
    pytest.skip(f"the Mandarin voice is not prepared in {VOICE} (make zh-voice)", allow_module_level=True)


@pytest.fixture(scope="module")
def zh_settings(settings: Settings) -> Settings:
    tts = settings.tts.model_copy(update={"chinese_model_name": "zh-baker"})
    return settings.model_copy(update={"tts": tts})


@pytest.fixture(scope="module")
def router(zh_settings: Settings) -> LanguageRouter:
    loaded = registry.load_tts(zh_settings)
    assert isinstance(loaded, LanguageRouter)
    return loaded


@pytest.fixture(scope="module")
def zh_tts(services: Services, router: LanguageRouter, zh_settings: Settings) -> TTSService:
    base = services.tts
    return TTSService(router, base.worker, base.voices, base.cache, zh_settings.tts)


@pytest.fixture(scope="module")
def base_whisper(settings: Settings) -> WhisperBackend:
    return WhisperBackend("base-multilingual", settings.storage.models_dir, beam_size=5)


def heard(whisper: WhisperBackend, audio: object, language: str) -> str:
    samples = resample(audio, whisper.sample_rate)  # type: ignore[arg-type]
    return whisper.transcribe(samples, TranscribeOptions(language=language)).text


def test_each_script_goes_to_its_voice(router: LanguageRouter, piper: PiperBackend) -> None:
    assert router.languages == ("en", "zh")
    assert router.sample_rate == router.main.sample_rate and not router.supports_cloning
    assert router.engine_for("请打开厨房的灯。") is router.others["zh"]
    assert router.engine_for("我用iPhone拍照。") is router.others["zh"]  # mostly Chinese
    assert router.engine_for("We met in 北京 last year.") is router.main  # mostly English
    assert router.engine_for("1234") is router.main


def test_a_mixed_reply_is_spoken_in_both_languages(
    zh_tts: TTSService, router: LanguageRouter, base_whisper: WhisperBackend, whisper: WhisperBackend
) -> None:
    """One segment of Chinese and English: each sentence by its own voice, in order."""
    chinese, english = "今天天气很好，我们去公园散步吧。", "The meeting starts at nine tomorrow morning."
    mixed = f"{chinese} {english} 你觉得呢？"
    assert zh_tts.prepare_text(mixed) == [mixed]
    engines = [(engine is router.main, run) for engine, run in router.runs(mixed)]
    assert engines == [(False, chinese), (True, english), (False, "你觉得呢？")]
    alone = [asyncio.run(zh_tts.synthesize(text)).audio for text in (chinese, english)]
    assert alone[0].sample_rate == router.sample_rate
    assert character_error_rate(chinese, heard(base_whisper, alone[0], "zh")) <= 0.2
    assert word_error_rate(english, heard(whisper, alone[1], "en")) <= 0.3
    together = asyncio.run(zh_tts.synthesize(mixed)).audio
    assert together.duration > alone[0].duration + alone[1].duration


def test_traditional_text_and_speed_reach_the_mandarin_voice(router: LanguageRouter) -> None:
    normal = router.synthesize(SynthesisRequest("北京是中國的首都。"))
    fast = router.synthesize(SynthesisRequest("北京是中國的首都。", speed=1.5))
    assert normal.duration > 1.0 and fast.duration < normal.duration * 0.8
    assert np.abs(normal.samples).max() > 0.05


def test_text_a_voice_cannot_speak_is_a_422_naming_the_language(services: Services) -> None:
    """The English-only default: Chinese, Japanese or Korean text is refused before synthesis,
    saying which language it is and how to get a Chinese voice; English with a Chinese name is not."""
    with pytest.raises(
        InvalidInputError, match=r"Chinese; the voice speaks English only.*TTS_CHINESE_MODEL_NAME"
    ):
        services.tts.prepare_text("你好，世界。")
    with pytest.raises(InvalidInputError, match="Japanese"):
        services.tts.prepare_text("こんにちは、元気ですか。")
    with pytest.raises(InvalidInputError, match="Korean"):
        services.tts.prepare_text("안녕하세요, 반갑습니다.")
    assert services.tts.prepare_text("We flew to 北京 last year.") == ["We flew to 北京 last year."]
    check_spoken("你好", ())  # an engine that names no language is trusted
    with pytest.raises(InvalidInputError, match="Japanese; the voice speaks English and Chinese"):
        check_spoken("こんにちは", ("en", "zh"))


def test_a_second_voice_must_speak_chinese(settings: Settings) -> None:
    wrong = settings.model_copy(
        update={"tts": settings.tts.model_copy(update={"chinese_model_name": "embedded"})}
    )
    with pytest.raises(ModelLoadError, match="speaks en, not Chinese"):
        registry.load_tts(wrong)
    assert espeak_language("en-us") == "en" and espeak_language("cmn-latn-pinyin") == "zh"


def test_the_manifest_records_both_voices(tmp_path: Path, zh_settings: Settings) -> None:
    keys = [model.key for model in registry.configured_models(zh_settings)]
    assert "zh-baker" in keys and "embedded-voices" in keys
    plain = make_settings(tmp_path, tts_chinese_model_name="")
    assert "zh-baker" not in [model.key for model in registry.configured_models(plain)]
