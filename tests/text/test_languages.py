"""Our table of Whisper's languages, against the tokenizer's own (a drift check: the product never
imports the library's private tables)."""

from __future__ import annotations

from backend.app.text.languages import WHISPER_LANGUAGES, language_name


def test_the_table_is_the_tokenizers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(WHISPER_LANGUAGES) == set(_LANGUAGE_CODES)
    assert len(WHISPER_LANGUAGES) == 100


def test_names_as_openai_reports_them() -> None:
    assert language_name("en") == "english" and language_name("zh") == "chinese"
    assert language_name("yue") == "cantonese" and language_name("xx") == "xx"
