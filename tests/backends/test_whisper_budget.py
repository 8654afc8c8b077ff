"""Whisper's decoding is bounded by the audio it decodes (backends/whisper_budget.py).

Every decoder call of the real embedded Whisper is counted at CTranslate2's `generate`, with the
number of new tokens it was allowed: a looped syllable (a few AAC frames of speech repeated, which
drives the model into a repetition loop on every attempt) used to take six attempts of the whole
448-token context per window.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from backend.app.audio.decode import decode_audio
from backend.app.backends.whisper import WhisperBackend
from backend.app.backends.whisper_budget import MAX_NEW_TOKENS, DecodeBudget
from backend.app.core.values import TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA
from tests.hostile_audio import looped_aac


class CountingGenerate:
    """CTranslate2's Whisper with its `generate` calls recorded (the real model does the work)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float]] = []  # (new tokens allowed, temperature)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, features: Any, prompts: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        self.calls.append((kwargs["max_length"] - len(prompts[0]), kwargs.get("sampling_temperature", 0.0)))
        return self.inner.generate(features, prompts, *args, **kwargs)


@pytest.fixture
def counted(whisper: WhisperBackend, monkeypatch: pytest.MonkeyPatch) -> CountingGenerate:
    counting = CountingGenerate(whisper._model.model)
    monkeypatch.setattr(whisper._model, "model", counting)
    return counting


def test_a_looped_syllable_costs_a_bounded_number_of_short_attempts(
    whisper: WhisperBackend, counted: CountingGenerate
) -> None:
    audio = decode_audio(looped_aac(12.0, offset=1.0), 16_000)
    result = whisper.transcribe(audio, TranscribeOptions())
    budget = DecodeBudget.for_audio(audio.duration)
    assert counted.calls, "the clip was not decoded at all"
    # It did loop (so the bound is what held it): the repeated text is all it heard.
    assert max(s.compression_ratio for s in result.segments) > 2.4
    windows = math.ceil(audio.duration / 30)
    assert len(counted.calls) <= windows + budget.fallbacks  # 6 a window before
    assert all(tokens <= MAX_NEW_TOKENS for tokens, _ in counted.calls)  # 448 before
    assert sum(tokens for tokens, _ in counted.calls) <= (windows + budget.fallbacks) * MAX_NEW_TOKENS


def test_speech_is_decoded_once_within_its_allowance(
    whisper: WhisperBackend, counted: CountingGenerate
) -> None:
    audio = decode_audio((DATA / "speech.wav").read_bytes(), 16_000)
    result = whisper.transcribe(audio, TranscribeOptions(language="en"))
    assert word_error_rate((DATA / "SENTENCE.txt").read_text(), result.text) <= 0.1
    assert [temperature for _, temperature in counted.calls] == [0.0]
    # A 3.3 s clip may produce far fewer tokens than a whole window, and more than it needs.
    (allowed, _), used = counted.calls[0], sum(len(s.tokens) for s in result.segments)
    assert used < allowed <= DecodeBudget.for_audio(audio.duration).max_new_tokens < MAX_NEW_TOKENS


def test_a_prompt_that_fills_the_context_is_not_an_error(whisper: WhisperBackend) -> None:
    """Hotwords and an initial prompt at their form limits take the whole text context."""
    audio = decode_audio((DATA / "speech.wav").read_bytes(), 16_000)
    options = TranscribeOptions(hotwords=" ".join(["q"] * 499), initial_prompt=" ".join(["z"] * 999))
    whisper.transcribe(audio, options)


def test_the_budget_follows_the_duration() -> None:
    short, window, long = (DecodeBudget.for_audio(s) for s in (3.0, 30.0, 600.0))
    assert short.max_new_tokens < window.max_new_tokens == long.max_new_tokens == MAX_NEW_TOKENS
    assert short.fallbacks == window.fallbacks < long.fallbacks
    assert long.fallbacks <= 600 / 30 + 1  # one a window on average: six were allowed
