"""The word error rate the English round trips use: case, punctuation and how a number is written
(digits or words, as Whisper chooses from one rendering to the next) are not errors."""

from __future__ import annotations

import pytest

from backend.app.text.wer import word_error_rate, words


@pytest.mark.parametrize(
    ("meant", "heard"),
    [
        ("Call my sister at seven o'clock.", "call my sister at 7 o'clock"),
        ("Call my sister at seven.", "Call my sister at 7:00."),
        ("Please bring two cups to the table.", "Please bring 2 cups to the table"),
        ("It costs twenty-five dollars.", "It costs 25 dollars."),
        ("It closes at six thirty.", "It closes at 6:30."),
        ("One thousand two hundred fifty people.", "1,250 people."),
        ("Three point five percent.", "3.5 percent"),
        ("Books are on the second floor, not the twenty first.", "Books are on the 2nd floor, not the 21st."),
        ("The twelfth, the fortieth, the one hundred and first.", "The 12th, the 40th, the 100 and 1st."),
    ],
)
def test_numbers_in_digits_count_as_words(meant: str, heard: str) -> None:
    assert word_error_rate(meant, heard) == 0.0, (words(meant), words(heard))


def test_a_wrong_number_or_word_is_still_an_error() -> None:
    assert word_error_rate("at seven o'clock", "at 8 o'clock") == pytest.approx(1 / 3)
    assert word_error_rate("Please bring two cups.", "Please bring two cats.") == 0.25
    assert word_error_rate("Play some quiet music.", "") == 1.0
    assert word_error_rate("", "") == 0.0
