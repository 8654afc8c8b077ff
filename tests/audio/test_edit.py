from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.edit import change_tempo, fade_edges, trim_silence
from backend.app.audio.types import Audio


def test_trim_keeps_the_loud_part_with_a_margin() -> None:
    rate = 1000
    samples = np.concatenate([np.zeros(500), np.full(200, 0.5), np.zeros(300)]).astype(np.float32)
    trimmed = trim_silence(Audio(samples, rate), keep_ms=30)
    assert len(trimmed.samples) == 200 + 2 * 30
    assert np.all(trimmed.samples[30:230] == 0.5)


def test_trim_leaves_silence_alone() -> None:
    silent = Audio(np.zeros(100, dtype=np.float32), 1000)
    assert trim_silence(silent) is silent


def test_fades_start_and_end_at_zero() -> None:
    audio = fade_edges(Audio(np.ones(1000, dtype=np.float32), 1000), fade_ms=10)
    assert audio.samples[0] == 0 and audio.samples[-1] == 0
    assert np.all(np.diff(audio.samples[:10]) > 0) and np.all(audio.samples[10:-10] == 1)


def test_fade_on_a_tiny_clip_does_not_fail() -> None:
    assert len(fade_edges(Audio(np.ones(3, dtype=np.float32), 1000)).samples) == 3


def _dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples))
    return float(np.fft.rfftfreq(len(audio.samples), 1 / audio.sample_rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("factor", [0.25, 0.5, 1.5, 4.0])
def test_tempo_changes_duration_and_keeps_pitch(factor: float) -> None:
    rate = 16_000
    tone = Audio((0.5 * np.sin(2 * np.pi * 440 * np.arange(rate * 2) / rate)).astype(np.float32), rate)
    changed = change_tempo(tone, factor)
    assert changed.sample_rate == rate and changed.samples.dtype == np.float32
    assert changed.duration == pytest.approx(2 / factor, rel=0.05)
    assert _dominant_hz(changed) == pytest.approx(440, abs=5)


def test_tempo_of_nothing_or_unchanged_is_the_same_audio() -> None:
    empty = Audio(np.zeros(0, dtype=np.float32), 16_000)
    assert change_tempo(empty, 2.0) is empty
    tone = Audio(np.ones(100, dtype=np.float32), 16_000)
    assert change_tempo(tone, 1.0) is tone
