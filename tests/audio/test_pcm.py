"""Raw PCM in (audio/pcm.py): every width, channel count and rate a streaming protocol may send,
to mono float32 at the model's rate, bounded before it is held."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.pcm import PcmCollector, check_format, pcm_to_mono
from backend.app.core.errors import AudioTooLongError, InvalidAudioError


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode(samples: np.ndarray, width: int) -> bytes:
    scale = float(1 << (8 * width - 1)) - 1
    ints = np.round(samples * scale).astype(np.int64)
    if width == 3:
        raw = ints.astype("<i4").tobytes()
        return b"".join(raw[i : i + 3] for i in range(0, len(raw), 4))
    return ints.astype({1: "i1", 2: "<i2", 4: "<i4"}[width]).tobytes()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_each_width_decodes_to_the_same_signal(width: int) -> None:
    samples = tone(16_000, 0.1) * np.linspace(-1, 1, 1600, dtype=np.float32)  # negative values too
    decoded = pcm_to_mono(encode(samples, width), width, 1)
    assert np.max(np.abs(decoded - samples)) < 2.0 / (1 << (8 * width - 1)) + 1e-6


def test_channels_are_averaged_and_a_partial_frame_is_dropped() -> None:
    left, right = tone(16_000, 0.05), np.zeros(800, dtype=np.float32)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    data = encode(stereo, 2) + b"\x01"  # a stray byte: half a sample
    mono = pcm_to_mono(data, 2, 2)
    assert len(mono) == 800 and np.allclose(mono, left / 2, atol=1e-4)


def test_chunks_at_44_1_khz_come_out_at_16_khz_whole() -> None:
    collector = PcmCollector(16_000, 60)
    signal = tone(44_100, 1.0)
    data = encode(signal, 2)
    for i in range(0, len(data), 4410):  # 50 ms chunks
        collector.add(data[i : i + 4410], 44_100, 2, 1)
    audio = collector.finish()
    assert audio.sample_rate == 16_000 and abs(len(audio.samples) - 16_000) <= 16
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio.samples) - 440) < 3


def test_a_change_of_format_mid_stream_is_followed() -> None:
    collector = PcmCollector(16_000, 60)
    collector.add(encode(tone(16_000, 0.5), 2), 16_000, 2, 1)
    collector.add(encode(tone(48_000, 0.5), 4), 48_000, 4, 1)
    assert abs(collector.finish().duration - 1.0) < 0.01


def test_too_much_audio_is_refused_before_it_is_held() -> None:
    collector = PcmCollector(16_000, 1.0)
    collector.add(bytes(16_000 * 2 // 2), 16_000, 2, 1)  # 0.5 s
    with pytest.raises(AudioTooLongError):
        collector.add(bytes(16_000 * 2), 16_000, 2, 1)  # 1 s more
    assert collector.duration == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(0, 2, 1), (10_000_000, 2, 1), (16_000, 5, 1), (16_000, 0, 1), (16_000, 2, 0), (16_000, 2, 64),
     ("16000", 2, 1), (16_000.5, 2, 1), (True, 2, 1), (None, 2, 1)],
)  # fmt: skip
def test_a_format_out_of_range_or_of_the_wrong_type_is_invalid_audio(
    rate: object, width: object, channels: object
) -> None:
    with pytest.raises(InvalidAudioError):
        check_format(rate, width, channels)
