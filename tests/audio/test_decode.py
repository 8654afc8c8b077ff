from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.core.errors import AudioTooLongError, InvalidAudioError
from tests.conftest import clip
from tests.hostile_audio import CASES, flac_rate_bomb, surround, wav

FORMATS = ["speech.wav", "speech.mp3", "speech.flac", "speech.ogg", "speech.webm", "speech.m4a", "speech.mp4"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_recorded_format_decodes_to_16k_mono_float(name: str) -> None:
    audio = decode_audio(clip(name), 16_000)
    assert audio.sample_rate == 16_000
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert 3.1 < audio.duration < 3.5  # the clip is 3.26 s; AAC adds a frame of padding
    assert np.abs(audio.samples).max() <= 1.0
    assert np.sqrt(np.mean(audio.samples**2)) > 0.02  # real speech, not silence


def test_native_rate_is_kept_without_target() -> None:
    assert decode_audio(clip("speech.wav")).sample_rate == 44_100


def test_stereo_is_downmixed() -> None:
    left = np.sin(np.linspace(0, 2000, 16_000)).astype(np.float32) * 0.5
    stereo = np.stack([left, left], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, stereo, 16_000, format="WAV")
    audio = decode_audio(buffer.getvalue(), 16_000)
    assert audio.samples.shape == (16_000,)
    assert np.allclose(audio.samples, left, atol=1e-3)


@pytest.mark.parametrize(
    "data", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEfmt ", bytes(range(256)) * 40]
)
def test_garbage_is_invalid_audio(data: bytes) -> None:
    with pytest.raises(InvalidAudioError):
        decode_audio(data, 16_000)


def test_an_image_is_not_audio() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    with pytest.raises(InvalidAudioError):
        decode_audio(png, 16_000)


@pytest.mark.parametrize("name", ["speech.mp3", "speech.wav", "speech.ogg"])
def test_truncated_file_keeps_what_decodes(name: str) -> None:
    data = clip(name)
    audio = decode_audio(data[: len(data) // 2], 16_000)
    assert 0.5 < audio.duration < 3.0


def test_duration_limit_refuses_long_audio() -> None:
    with pytest.raises(AudioTooLongError) as refused:
        decode_audio(clip("speech.flac"), 16_000, max_seconds=1.0)
    assert refused.value.status_code == 422
    assert decode_audio(clip("speech.flac"), 16_000, max_seconds=10.0).duration > 3


def test_resample_changes_rate_and_length() -> None:
    audio = Audio(np.zeros(22_050, dtype=np.float32), 22_050)
    out = resample(audio, 16_000)
    assert out.sample_rate == 16_000 and len(out.samples) == 16_000


def test_fragmented_mp4_as_safari_records_it() -> None:
    # Safari's MediaRecorder (the page's push to talk) writes AAC in a fragmented MP4: an empty
    # moov and one moof per fragment, with no duration up front. Chromium's WebM/Opus is covered by
    # the browser tests, which record through Chromium itself.
    import av

    speech = decode_audio(clip("speech.wav"), 48_000)
    buffer = io.BytesIO()
    with av.open(
        buffer, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    ) as container:
        stream = container.add_stream("aac", rate=48_000, layout="mono")
        samples = (speech.samples * 32767).astype(np.int16)
        for start in range(0, len(samples), 4800):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + 4800], format="s16", layout="mono"
            )
            frame.sample_rate = 48_000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = buffer.getvalue()
    assert b"moof" in data  # really fragmented
    audio = decode_audio(data, 16_000)
    assert 3.1 < audio.duration < 3.5
    assert np.sqrt(np.mean(audio.samples**2)) > 0.02


@pytest.mark.parametrize(
    ("container", "codec", "layout"),
    [("adts", "aac", "7.1"), ("mp4", "aac", "7.1"), ("ogg", "libopus", "7.1"), ("ogg", "libopus", "5.1")],
)
def test_surround_audio_decodes_to_the_mean_of_its_channels(container: str, codec: str, layout: str) -> None:
    """Eight planar channels crashed the process: PyAV read a ninth channel pointer past FFmpeg's
    eight (a 7.1 AAC or Opus upload, or an ADTS header saying 7.1, took the server down)."""
    audio = decode_audio(surround(container, codec, layout), 16_000)
    assert abs(audio.duration - 1.0) < 0.05
    # Tones of different pitch on every channel, averaged: quieter than one, far from silence.
    rms = float(np.sqrt(np.mean(audio.samples**2)))
    assert 0.02 < rms < 0.3 / np.sqrt(2)


@pytest.mark.parametrize(("label", "data"), CASES, ids=[label for label, _ in CASES])
def test_any_header_value_decodes_or_is_invalid_audio(label: str, data: bytes) -> None:
    """One header field at a boundary value (tests/hostile_audio.py): usable audio or a 4xx error,
    never another exception."""
    try:
        audio = decode_audio(data, 16_000, max_seconds=60)
    except (InvalidAudioError, AudioTooLongError):
        return
    assert audio.sample_rate == 16_000 and audio.samples.dtype == np.float32
    assert audio.duration <= 60 + 1
    assert np.all(np.isfinite(audio.samples)) and np.abs(audio.samples).max(initial=0) <= 1.0


def test_decoding_memory_follows_the_output_rate_not_the_file_rate() -> None:
    """50 s at 384 kHz is 77 MB of float32 at the file's rate; at 16 kHz, 3.2 MB."""
    bomb = flac_rate_bomb(384_000, 50)
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        audio = decode_audio(bomb, 16_000, max_seconds=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(audio.duration - 50) < 0.01
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_without_a_target_rate_high_rates_come_down_to_48k() -> None:
    audio = decode_audio(flac_rate_bomb(192_000, 2))
    assert audio.sample_rate == 48_000 and abs(audio.duration - 2) < 0.01


@pytest.mark.parametrize("rate", [1, 999, 384_001, 655_350])
def test_rates_outside_what_audio_uses_are_refused(rate: int) -> None:
    with pytest.raises(InvalidAudioError, match="sample rate"):
        decode_audio(wav(rate=rate, byte_rate=rate * 2), 16_000)
