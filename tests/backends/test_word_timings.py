"""Word timings from the embedded voices (their duration predictors), and from forced alignment
for an engine that gives none, measured against Whisper's own word timestamps on the same audio
(the bench's measure, bench/word_timings.py, on fewer sentences and with a bound that holds on
any machine: measured 45-65 ms against a bound of 120 ms), and against the signal itself where
a word follows a pause."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import cast

import pytest

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio, SpokenWord
from backend.app.backends.hibari import HibariBackend
from backend.app.backends.piper import PiperBackend
from backend.app.backends.protocols import TextToSpeech
from backend.app.backends.voice_pair import VoicePair
from backend.app.backends.whisper import WhisperBackend
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.services.tts import TTSService
from backend.app.text.word_timing import words_of
from bench.common import median
from bench.word_timings import differences, onsets

SENTENCES = (
    "Turn off the lights in the living room, please.",
    "Remind me to call my sister at half past six.",
    "Your next appointment is on Thursday at nine in the morning.",
    "The train to Boston leaves from platform four.",
    "Take two tablets with water after breakfast.",
    "Good morning! You have three new messages.",
)
BOUND_S = 0.12
"""Median |start difference| against Whisper tiny.en; measured 0.045-0.065 s."""


@pytest.fixture(scope="module")
def heart(services: Services) -> HibariBackend:
    pair = services.tts.backend
    assert isinstance(pair, VoicePair)
    voice = pair.voice(None)
    assert isinstance(voice, HibariBackend)
    return voice


def engines(heart: HibariBackend, piper: PiperBackend) -> dict[str, TextToSpeech]:
    return {"heart": cast(TextToSpeech, heart), "joe": cast(TextToSpeech, piper)}


def heard(whisper: WhisperBackend, audio: Audio) -> list[object]:
    options = TranscribeOptions(language="en", word_timestamps=True)
    found = whisper.transcribe(resample(audio, whisper.sample_rate), options)
    return [word for segment in found.segments for word in segment.words]


def start_error(whisper: WhisperBackend, spoken: list[tuple[Audio, tuple[SpokenWord, ...]]]) -> float:
    """The median |start difference| between `spoken` words and Whisper's, over all the audio."""
    starts: list[float] = []
    for audio, words in spoken:
        starts += differences(words, heard(whisper, audio))[0]
    assert len(starts) >= 5 * len(spoken)  # most words are paired
    return median([abs(s) for s in starts])


@pytest.mark.parametrize("name", ["heart", "joe"])
def test_the_words_are_the_texts_in_order_within_the_audio(
    heart: HibariBackend, piper: PiperBackend, name: str
) -> None:
    engine = engines(heart, piper)[name]
    text = "On May 3rd, I paid $42.50 for 2 tickets — it's a don't-miss show!"
    audio = engine.synthesize(SynthesisRequest(text))
    assert audio.words is not None
    assert [w.word for w in audio.words] == words_of(text)
    for before, after in zip(audio.words, audio.words[1:], strict=False):
        assert before.start <= before.end <= after.start + 1e-9
    assert audio.words[0].start >= 0 and audio.words[-1].end <= audio.duration + 1e-9
    assert audio.words[-1].end > 0.6 * audio.duration  # the words span the speech, not a corner of it


@pytest.mark.parametrize("name", ["heart", "joe"])
def test_word_starts_agree_with_whispers(
    heart: HibariBackend, piper: PiperBackend, whisper: WhisperBackend, name: str
) -> None:
    engine = engines(heart, piper)[name]
    spoken = []
    for text in SENTENCES:
        audio = engine.synthesize(SynthesisRequest(text))
        spoken.append((audio, audio.words or ()))
    assert start_error(whisper, spoken) <= BOUND_S


PAUSED = (
    "Red, green, blue, and yellow.",
    "One. Two. Three. Four. Five.",
    "Yes, of course. Tomorrow, then. Goodbye!",
    "First the eggs, then the flour, and last the milk.",
    "Stop. Look. Listen. Then cross the road.",
)
ONSET_BOUND_S = 0.1
"""Median |start - onset| for words after a pause; measured 8-15 ms (Piper), 61 ms (hibari); words
placed by their length in characters (what peers guess): 145-290 ms."""


def by_length(audio: Audio, words: tuple[SpokenWord, ...]) -> tuple[SpokenWord, ...]:
    """The guess: the audio shared among the words by their length in characters."""
    lengths = [len(w.word) + 1 for w in words]
    total, placed, at = sum(lengths), [], 0
    for word, length in zip(words, lengths, strict=True):
        placed.append(
            SpokenWord(word.word, at / total * audio.duration, (at + length) / total * audio.duration)
        )
        at += length
    return tuple(placed)


@pytest.mark.parametrize("name", ["heart", "joe"])
def test_words_after_a_pause_start_where_the_speech_does(
    heart: HibariBackend, piper: PiperBackend, name: str
) -> None:
    """An independent reference: a word after a pause begins where the signal rises again."""
    engine = engines(heart, piper)[name]
    ours, guessed = [], []
    for text in PAUSED:
        audio = engine.synthesize(SynthesisRequest(text))
        words = audio.words or ()
        guess = by_length(audio, words)
        for index, onset in onsets(audio, words):
            ours.append(abs(words[index].start - onset))
            guessed.append(abs(guess[index].start - onset))
    assert len(ours) >= 10
    assert median(ours) <= ONSET_BOUND_S
    assert median(guessed) > ONSET_BOUND_S  # what the bound tells apart


def test_a_faster_speed_brings_the_words_earlier(piper: PiperBackend) -> None:
    """The words move with the speech: at 1.5x the audio is shorter and the words still span it
    (Piper's durations are drawn with noise, so the ratio is compared to the audio's, not to 1/1.5)."""
    text = "The museum opens at ten and closes at five on weekends."
    normal = piper.synthesize(SynthesisRequest(text))
    fast = piper.synthesize(SynthesisRequest(text, speed=1.5))
    assert normal.words and fast.words and [w.word for w in normal.words] == [w.word for w in fast.words]
    assert fast.duration < 0.85 * normal.duration
    assert fast.words[-1].end < 0.85 * normal.words[-1].end
    for audio in (normal, fast):
        assert audio.words is not None and audio.words[-1].end / audio.duration > 0.85


class Untimed:
    """hibari with its word times dropped: an engine that gives none (as VibeVoice)."""

    def __init__(self, engine: HibariBackend) -> None:
        self._engine = engine
        self.sample_rate = engine.sample_rate
        self.info, self.languages, self.speakers = engine.info, engine.languages, engine.speakers
        self.supports_cloning, self.supports_speed, self.max_dialogue_speakers = False, True, 0

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return dataclasses.replace(self._engine.synthesize(request), words=None)

    def estimate_seconds(self, text: str) -> float:
        return self._engine.estimate_seconds(text)


def test_an_engine_without_durations_is_force_aligned(
    heart: HibariBackend, services: Services, whisper: WhisperBackend
) -> None:
    """The service fills in the words with the STT's forced alignment; they land where hibari's
    own durations put them, and agree with Whisper's timestamps as closely."""
    tts = services.tts
    untimed = TTSService(
        cast(TextToSpeech, Untimed(heart)), tts.worker, tts.voices, tts.cache, tts.settings, aligner=whisper
    )
    aligned, own = [], []
    for text in SENTENCES[:4]:
        audio = asyncio.run(untimed.synthesize(text)).audio
        assert audio.words is not None and [w.word for w in audio.words] == words_of(text)
        aligned.append((audio, audio.words))
        # the same text by hibari itself: its durations against the alignment of its own audio
        spoken = heart.synthesize(SynthesisRequest(text))
        forced = whisper.align(spoken, text)
        own += [abs(f.start - o.start) for f, o in zip(forced, spoken.words or (), strict=True)]
    assert start_error(whisper, aligned) <= BOUND_S
    assert median(own) <= BOUND_S
    without = TTSService(cast(TextToSpeech, Untimed(heart)), tts.worker, tts.voices, tts.cache, tts.settings)
    assert asyncio.run(without.synthesize("Hello there.")).audio.words is None  # no aligner: not known
