from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.audio.encode import AudioFormat, StreamEncoder, encode_audio, to_pcm16
from backend.app.audio.types import Audio


def tone(rate: int = 22_050, seconds: float = 1.0) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_encoded_audio_decodes_back_with_the_same_length(fmt: str) -> None:
    data = encode_audio(tone(), fmt)  # type: ignore[arg-type]
    back = decode_audio(data, 22_050)
    assert abs(back.duration - 1.0) < 0.08
    # A 440 Hz tone survives every codec: its energy is still there.
    assert 0.15 < float(np.sqrt(np.mean(back.samples**2))) < 0.26


def test_magic_bytes() -> None:
    audio = tone()
    assert encode_audio(audio, "wav")[:4] == b"RIFF"
    assert encode_audio(audio, "flac")[:4] == b"fLaC"
    assert encode_audio(audio, "ogg")[:4] == b"OggS"
    mp3 = encode_audio(audio, "mp3")
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


def test_pcm_is_raw_s16le() -> None:
    audio = Audio(np.array([0.0, 1.0, -1.0, 2.0], dtype=np.float32), 16_000)
    pcm = to_pcm16(audio)
    assert encode_audio(audio, "pcm") == pcm
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 32767, -32767, 32767]


@pytest.mark.parametrize("fmt", ["wav", "ogg", "mp3", "flac"])
def test_stream_encoder_chunks_concatenate_to_one_playable_file(fmt: AudioFormat) -> None:
    encoder = StreamEncoder(fmt, 22050)
    parts = [encoder.encode(tone()) for _ in range(3)]
    parts.append(encoder.finish())
    assert all(parts[:3]), "every chunk yields bytes at once (nothing held until the end)"
    decoded = decode_audio(b"".join(parts), 16000)
    assert decoded.duration == pytest.approx(3.0, abs=0.08)


def test_stream_encoder_pcm_is_bare_samples() -> None:
    encoder = StreamEncoder("pcm", 16000)
    assert encoder.encode(Audio(np.zeros(160, np.float32), 16000)) == bytes(320)
    assert encoder.finish() == b""


def test_stream_encoder_refuses_a_changed_rate() -> None:
    encoder = StreamEncoder("wav", 16000)
    with pytest.raises(ValueError):
        encoder.encode(Audio(np.zeros(10, np.float32), 22050))
