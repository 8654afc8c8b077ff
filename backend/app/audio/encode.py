"""Encode synthesised audio for a response: wav, flac, mp3, ogg (Opus) or raw pcm."""

from __future__ import annotations

import io
from typing import Literal, cast

import av
import numpy as np
import soundfile as sf
from av.audio.stream import AudioStream

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio

AudioFormat = Literal["wav", "flac", "mp3", "ogg", "pcm"]

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "pcm": "audio/pcm",
}

# Opus accepts only these rates; anything else is resampled to the next one up.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def to_pcm16(audio: Audio) -> bytes:
    """Little-endian signed 16-bit mono samples."""
    clipped = np.clip(audio.samples, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def _encode_soundfile(audio: Audio, container: str) -> bytes:
    buffer = io.BytesIO()
    subtype = "PCM_16"
    sf.write(buffer, audio.samples, audio.sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _encode_av(audio: Audio, container: str, codec: str, bit_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = cast(AudioStream, out.add_stream(codec, rate=audio.sample_rate, layout="mono"))
        stream.bit_rate = bit_rate
        samples = np.clip(audio.samples, -1.0, 1.0).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = audio.sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def encode_audio(audio: Audio, fmt: AudioFormat) -> bytes:
    """Encode mono float32 audio in the requested format."""
    if fmt == "pcm":
        return to_pcm16(audio)
    if fmt == "wav":
        return _encode_soundfile(audio, "WAV")
    if fmt == "flac":
        return _encode_soundfile(audio, "FLAC")
    if fmt == "mp3":
        return _encode_av(audio, "mp3", "libmp3lame", 128_000)
    if fmt == "ogg":
        rate = next((r for r in _OPUS_RATES if r >= audio.sample_rate), 48000)
        return _encode_av(resample(audio, rate), "ogg", "libopus", 64_000)
    raise ValueError(f"unknown audio format {fmt!r}")
