"""Encode synthesised audio for a response: wav, flac, mp3, ogg (Opus) or raw pcm."""

from __future__ import annotations

import io
from typing import Literal, cast

import av
import numpy as np
import soundfile as sf
import soxr
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
        return _encode_av(resample(audio, _opus_rate(audio.sample_rate)), "ogg", "libopus", 64_000)
    raise ValueError(f"unknown audio format {fmt!r}")


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file that hands over what the muxer wrote so far."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length: both sizes 0xFFFFFFFF, which
    FFmpeg, browsers and most players read as "until the end of the stream"."""
    unknown = 0xFFFFFFFF
    byte_rate = sample_rate * 2
    return (
        b"RIFF"
        + unknown.to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + sample_rate.to_bytes(4, "little")
        + byte_rate.to_bytes(4, "little")
        + (2).to_bytes(2, "little")  # block align
        + (16).to_bytes(2, "little")  # bits per sample
        + b"data"
        + unknown.to_bytes(4, "little")
    )


class StreamEncoder:
    """Encodes audio chunk by chunk for a streamed response; `encode` returns the bytes ready now.

    wav is a header for an open-ended stream followed by PCM16; pcm is bare PCM16; flac, mp3 and
    ogg (Opus, resampled to an Opus rate with a streaming resampler) go through PyAV's muxer.
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._container: av.container.OutputContainer | None = None
        self._resampler: soxr.ResampleStream | None = None
        if fmt in ("wav", "pcm"):
            return
        codec, options, rate = {
            "flac": ("flac", {}, sample_rate),
            "mp3": ("libmp3lame", {}, sample_rate),
            # Short pages, so each chunk reaches the client with the chunk, not a second later.
            "ogg": ("libopus", {"page_duration": "100000"}, _opus_rate(sample_rate)),
        }[fmt]
        if rate != sample_rate:
            self._resampler = soxr.ResampleStream(sample_rate, rate, 1, dtype="float32")
        self._rate = rate
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=fmt, options=options)
        self._stream = cast(AudioStream, self._container.add_stream(codec, rate=rate, layout="mono"))
        if fmt != "flac":
            self._stream.bit_rate = 64_000 if fmt == "ogg" else 128_000

    def _mux(self, samples: np.ndarray | None) -> bytes:
        assert self._container is not None
        frame = None
        if samples is not None and samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._rate
        elif samples is not None:
            return b""
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def encode(self, audio: Audio) -> bytes:
        if audio.sample_rate != self.sample_rate:
            raise ValueError("a stream's chunks must share one sample rate")
        samples = np.clip(audio.samples, -1.0, 1.0).astype(np.float32)
        if self._container is None:
            header = b"" if self._started or self.format == "pcm" else wav_stream_header(self.sample_rate)
            self._started = True
            return header + to_pcm16(Audio(samples, self.sample_rate))
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return self._mux(samples)

    def finish(self) -> bytes:
        """The bytes that close the stream (codec delay, trailer); the encoder is done after."""
        if self._container is None:
            return b"" if self._started or self.format == "pcm" else wav_stream_header(self.sample_rate)
        tail = b""
        if self._resampler is not None:
            tail = self._mux(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        tail += self._mux(None)
        self._container.close()
        return tail + self._sink.take()


def _opus_rate(sample_rate: int) -> int:
    return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)
