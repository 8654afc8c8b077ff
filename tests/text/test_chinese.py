"""Chinese text: one script for comparisons, and the character error rate the round trips use."""

from __future__ import annotations

import pytest

from backend.app.text.chinese import script_language, to_simplified
from backend.app.text.wer import character_error_rate, han_characters


def test_traditional_becomes_simplified_and_simplified_stays() -> None:
    assert to_simplified("北京是中國的首都，有三千多年的歷史。") == "北京是中国的首都，有三千多年的历史。"
    assert to_simplified("请打开厨房的灯") == "请打开厨房的灯"
    assert to_simplified("Hello 123") == "Hello 123"


def test_character_error_rate_counts_characters_in_either_script() -> None:
    assert han_characters("你好，世界! OK 2") == ["你", "好", "世", "界"]
    assert character_error_rate("我们的历史", "我們的歷史。") == 0.0  # Traditional, punctuation
    assert character_error_rate("你好世界", "你號世界") == 0.25
    assert character_error_rate("你好世界", "你好") == 0.5
    assert character_error_rate("你好", "") == 1.0
    assert character_error_rate("", "") == 0.0


@pytest.mark.parametrize(
    ("meant", "heard"),
    [
        ("会议三点开始，一共有二十五个人", "會議3點開始，一共有25個人"),  # Whisper writes digits
        ("一百零五个", "105个"),
        ("一万零五百", "10500"),
        ("十二万零三十四", "120034"),
        ("两个苹果", "2个苹果"),  # 两 is how 2 is said before a measure word
        ("二零二四年", "2024年"),  # a year, digit by digit
        ("三点五", "3.5"),
        ("百分之五十", "50%"),
    ],
)
def test_numbers_in_digits_count_as_read_out(meant: str, heard: str) -> None:
    assert character_error_rate(meant, heard) == 0.0
    assert character_error_rate(heard, meant) == 0.0
    assert han_characters(heard) != han_characters(meant)  # the characters alone still differ


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("你好，世界。", "zh"),
        ("北京是中國的首都。", "zh"),  # Traditional
        ("我用iPhone拍照，效果很好。", "zh"),  # mostly Chinese
        ("会议在下午3点开始。", "zh"),
        ("We flew to 北京 last year.", None),  # mostly English
        ("Hello, how are you?", None),
        ("Привет, как дела?", None),  # Cyrillic: many languages write it
        ("1234 5678", None),
        ("", None),
        ("こんにちは、元気ですか。", "ja"),
        ("東京に行きます。", "ja"),  # kanji with kana: Japanese
        ("안녕하세요, 반갑습니다.", "ko"),
    ],
)
def test_the_script_names_the_language(text: str, language: str | None) -> None:
    assert script_language(text) == language
