from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.audio.encode import AudioFormat, StreamEncoder, encode_audio, to_pcm16
from backend.app.audio.types import Audio


def tone(rate: int = 22_050, seconds: float = 1.0) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "aac"])
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
    aac = encode_audio(audio, "aac")  # ADTS: every frame starts with a 12-bit sync word
    assert aac[0] == 0xFF and aac[1] & 0xF0 == 0xF0


def test_pcm_is_raw_s16le() -> None:
    audio = Audio(np.array([0.0, 1.0, -1.0, 2.0], dtype=np.float32), 16_000)
    pcm = to_pcm16(audio)
    assert encode_audio(audio, "pcm") == pcm
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 32767, -32767, 32767]


@pytest.mark.parametrize("fmt", ["wav", "ogg", "mp3", "flac", "aac"])
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


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
def test_stream_encoder_resamples_to_the_output_rate(fmt: AudioFormat) -> None:
    encoder = StreamEncoder(fmt, 22_050, out_rate=24_000)
    assert encoder.out_rate == 24_000
    data = b"".join([encoder.encode(tone()), encoder.encode(tone()), encoder.finish()])
    if fmt == "pcm":
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767
        assert len(samples) == pytest.approx(48_000, abs=2)  # every input sample accounted for
        peak = int(np.argmax(np.abs(np.fft.rfft(samples))))
        assert np.fft.rfftfreq(len(samples), 1 / 24_000)[peak] == pytest.approx(440, abs=2)
        return
    decoded = decode_audio(data)
    assert decoded.sample_rate == 24_000 and decoded.duration == pytest.approx(2.0, abs=0.08)


def test_opus_output_goes_to_an_opus_rate() -> None:
    assert StreamEncoder("ogg", 22_050, out_rate=24_000).out_rate == 24_000
    assert StreamEncoder("ogg", 22_050).out_rate == 24_000
