from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.audio.encode import encode_audio, to_pcm16
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
