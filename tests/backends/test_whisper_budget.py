"""Whisper's decoding is bounded by the audio it decodes (backends/whisper_budget.py).

Every decoder call of the real embedded Whisper is counted at CTranslate2's `generate`, with the
number of new tokens it was allowed: a looped syllable (a few AAC frames of speech repeated, which
drives the model into a repetition loop on every attempt) used to take six attempts of the whole
448-token context per window.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import math
import random
from dataclasses import replace
from typing import Any

import pytest

from backend.app.audio.decode import decode_audio
from backend.app.backends.whisper import WhisperBackend
from backend.app.backends.whisper_budget import MAX_NEW_TOKENS, DecodeBudget
from backend.app.core.values import TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA
from tests.hostile_audio import looped_aac

with contextlib.redirect_stdout(io.StringIO()):
    import this  # the Zen of Python, in rot13

SPENT = "a transcription's decoding fallbacks are spent: its windows keep the best result so far"
PROSE = " ".join(2 * (codecs.decode(this.s, "rot13") + " " + (random.__doc__ or "")).split())[:2000]


def model_options() -> Any:
    """faster-whisper's options as its `transcribe` fills them by default."""
    from faster_whisper.transcribe import TranscriptionOptions

    fields = TranscriptionOptions.__dataclass_fields__
    return TranscriptionOptions(**dict.fromkeys(fields, None))


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
    whisper: WhisperBackend, counted: CountingGenerate, caplog: pytest.LogCaptureFixture
) -> None:
    audio = decode_audio(looped_aac(12.0, offset=1.0), 16_000)
    with caplog.at_level(logging.INFO, logger="backend.app.backends.whisper_budget"):
        result = whisper.transcribe(audio, TranscribeOptions())
    assert [r.message for r in caplog.records].count(SPENT) == 1  # said once, for the operator
    budget = DecodeBudget.for_audio(audio.duration)
    assert counted.calls, "the clip was not decoded at all"
    # It did loop (so the bound is what held it): the repeated text is all it heard.
    assert max(s.compression_ratio for s in result.segments) > 2.4
    windows = math.ceil(audio.duration / 30)
    assert len(counted.calls) <= windows + budget.fallbacks  # 6 a window before
    assert all(tokens <= MAX_NEW_TOKENS for tokens, _ in counted.calls)  # 448 before
    assert sum(tokens for tokens, _ in counted.calls) <= (windows + budget.fallbacks) * MAX_NEW_TOKENS


def test_speech_is_decoded_once_within_its_allowance(
    whisper: WhisperBackend, counted: CountingGenerate, caplog: pytest.LogCaptureFixture
) -> None:
    audio = decode_audio((DATA / "speech.wav").read_bytes(), 16_000)
    with caplog.at_level(logging.INFO, logger="backend.app.backends.whisper_budget"):
        result = whisper.transcribe(audio, TranscribeOptions(language="en"))
    assert SPENT not in [r.message for r in caplog.records]
    assert word_error_rate((DATA / "SENTENCE.txt").read_text(), result.text) <= 0.1
    assert [temperature for _, temperature in counted.calls] == [0.0]
    # A 3.3 s clip may produce far fewer tokens than a whole window, and more than it needs.
    (allowed, _), used = counted.calls[0], sum(len(s.tokens) for s in result.segments)
    assert used < allowed <= DecodeBudget.for_audio(audio.duration).max_new_tokens < MAX_NEW_TOKENS


def test_a_prompt_that_fills_the_context_still_leaves_room_to_write(
    whisper: WhisperBackend, counted: CountingGenerate
) -> None:
    """Hotwords and an initial prompt at their form limits (/stt: 1,000 and 2,000 characters) each
    take half the text context: the window had no room left and the transcript came out empty."""
    audio = decode_audio((DATA / "speech.wav").read_bytes(), 16_000)
    options = TranscribeOptions(
        hotwords=" ".join(str(n) for n in range(1000, 1300))[:1000], initial_prompt=PROSE
    )
    whisper.transcribe(audio, TranscribeOptions())
    (unprompted, _) = counted.calls.pop()
    result = whisper.transcribe(audio, options)
    # The same room to write as without a prompt. (What tiny.en makes of a prompt this size is its
    # own affair: it can follow the prompt rather than the audio, so the words are not checked.)
    assert counted.calls and all(tokens == unprompted for tokens, _ in counted.calls), counted.calls
    assert result.text.strip()


def test_the_oldest_context_gives_way_and_the_hotwords_stay(whisper: WhisperBackend) -> None:
    from faster_whisper.tokenizer import Tokenizer

    model = whisper._model
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual)
    hotwords = "Kubernetes Grafana Prometheus"
    previous = tokenizer.encode(" " + PROSE)
    prompt = model.get_prompt(tokenizer, previous, hotwords=hotwords)
    options = replace(model_options(), hotwords=hotwords)
    kept = model._leave_room(prompt, tokenizer, options, MAX_NEW_TOKENS)
    hot = tokenizer.encode(" " + hotwords)
    assert len(kept) + MAX_NEW_TOKENS == model.max_length < len(prompt) + MAX_NEW_TOKENS
    assert kept[: 1 + len(hot)] == [tokenizer.sot_prev, *hot]  # the hotwords, whole
    assert kept[-1] == tokenizer.sot and kept[1 + len(hot) : -1] == previous[-len(kept) + 2 + len(hot) :]
    assert model._leave_room(prompt, tokenizer, options, 10) == prompt  # room enough: as it was


def test_the_budget_follows_the_duration() -> None:
    short, window, long = (DecodeBudget.for_audio(s) for s in (3.0, 30.0, 600.0))
    assert short.max_new_tokens < window.max_new_tokens == long.max_new_tokens == MAX_NEW_TOKENS
    assert short.fallbacks == window.fallbacks < long.fallbacks
    assert long.fallbacks <= 600 / 30 + 1  # one a window on average: six were allowed
