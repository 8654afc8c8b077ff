"""The Mandarin voice (TTS_MODEL_NAME=zh-baker), checked by ear: what it says is transcribed back
by the multilingual Whisper base and compared character by character. Runs once the voice is
prepared (scripts/prepare_zh_voice.sh); skipped, saying so, otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.app.audio.decode import resample
from backend.app.backends.baker_zh import FILES, BakerMandarinBackend
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import character_error_rate

REPO = Path(__file__).parent.parent.parent
VOICE = REPO / "models" / "zh-baker"
MAX_CER = 0.15

if not all((VOICE / name).is_file() for name in FILES):
    pytest.skip(
        f"the Mandarin voice is not prepared in {VOICE} (scripts/prepare_zh_voice.sh)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def voice() -> BakerMandarinBackend:
    return BakerMandarinBackend(VOICE)


@pytest.fixture(scope="module")
def whisper() -> WhisperBackend:
    return WhisperBackend("base-multilingual", REPO / "models", beam_size=5)


def heard(
    voice: BakerMandarinBackend, whisper: WhisperBackend, text: str, speed: float = 1.0
) -> tuple[str, float]:
    audio = voice.synthesize(SynthesisRequest(text, speed=speed))
    transcript = whisper.transcribe(resample(audio, whisper.sample_rate), TranscribeOptions(language="zh"))
    return transcript.text, audio.duration


SENTENCES = [
    ("请打开厨房的灯，播放一些安静的音乐。", "请打开厨房的灯播放一些安静的音乐"),
    ("北京是中國的首都，有三千多年的歷史。", "北京是中国的首都有三千多年的历史"),  # Traditional
    ("会议在下午3点开始，一共有25个人参加。", "会议在下午三点开始一共有二十五个人参加"),  # digits
    ("我们明天去看电影吧！你觉得怎么样？", "我们明天去看电影吧你觉得怎么样"),
]


def test_mandarin_round_trip(voice: BakerMandarinBackend, whisper: WhisperBackend) -> None:
    rates = {}
    for text, meant in SENTENCES:
        transcript, _ = heard(voice, whisper, text)
        rates[transcript] = character_error_rate(meant, transcript)
    # Whisper base mishears some homophones (在/再): a bound on the mean, a looser one on each.
    assert sum(rates.values()) / len(rates) <= MAX_CER, rates
    assert max(rates.values()) <= 0.3, rates


def test_speed_and_mixed_script(voice: BakerMandarinBackend, whisper: WhisperBackend) -> None:
    _, normal = heard(voice, whisper, "今天天气很好，我们去公园散步吧。")
    transcript, fast = heard(voice, whisper, "今天天气很好，我们去公园散步吧。", speed=1.5)
    assert fast < normal * 0.8
    assert character_error_rate("今天天气很好我们去公园散步吧", transcript) <= MAX_CER, transcript
    # Latin words it cannot read are left out; the Chinese around them is spoken.
    transcript, _ = heard(voice, whisper, "我喜欢用 Python 写程序。")
    assert character_error_rate("我喜欢用写程序", transcript) <= 0.3, transcript


def test_text_without_chinese_is_refused_naming_the_language(voice: BakerMandarinBackend) -> None:
    with pytest.raises(InvalidInputError, match="Chinese only"):
        voice.synthesize(SynthesisRequest("Hello, how are you?"))
    assert voice.estimate_seconds("你好，世界。") > 0.5
