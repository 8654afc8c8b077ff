"""Translation (OpenAI's /v1/audio/translations) with the embedded multilingual Whisper base."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.app.audio.decode import decode_audio
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.values import TranscribeOptions
from backend.app.text.wer import words

DATA = Path(__file__).parent.parent / "data"
REPO = Path(__file__).parent.parent.parent
# tests/data/german.flac (espeak-ng) says: "Guten Morgen. Das Wetter ist heute sehr schön, und ich
# gehe mit meinem Hund im Park spazieren." ("Good morning. The weather is very nice today, and I am
# walking my dog in the park.")
ENGLISH_KEYWORDS = {"good", "morning", "today", "dog", "park", "weather", "very"}
GERMAN_KEYWORDS = {"guten", "morgen", "heute", "sehr", "und", "ich", "mit", "meinem", "park"}


@pytest.fixture(scope="module")
def multilingual() -> WhisperBackend:
    return WhisperBackend("base-multilingual", REPO / "models", beam_size=5)


def test_german_speech_is_transcribed_in_german_and_translated_to_english(
    multilingual: WhisperBackend,
) -> None:
    audio = decode_audio((DATA / "german.flac").read_bytes(), multilingual.sample_rate)
    heard = multilingual.transcribe(audio, TranscribeOptions())
    assert heard.language == "de"
    assert len(set(words(heard.text)) & GERMAN_KEYWORDS) >= 5, heard.text
    translated = multilingual.transcribe(audio, TranscribeOptions(task="translate"))
    assert translated.language == "de"  # the language spoken; the text is English
    found = set(words(translated.text))
    assert len(found & ENGLISH_KEYWORDS) >= 3, translated.text
    assert not found & {"guten", "morgen", "heute", "meinem"}, translated.text
