"""Encode synthesised audio for a response: wav, flac, mp3, ogg (Opus), aac (ADTS) or raw pcm."""

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

AudioFormat = Literal["wav", "flac", "mp3", "ogg", "aac", "pcm"]

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "pcm": "audio/pcm",
}

# The muxer, codec and bit rate (None: lossless) of each format PyAV encodes.
_AV_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "flac": ("flac", "flac", None),
    "mp3": ("mp3", "libmp3lame", 128_000),
    "ogg": ("ogg", "libopus", 64_000),
    "aac": ("adts", "aac", 128_000),
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
    if fmt == "aac":
        return _encode_av(audio, "adts", "aac", 128_000)
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

    wav is a header for an open-ended stream followed by PCM16; pcm is bare PCM16; flac, mp3, ogg
    (Opus, at an Opus rate) and aac (ADTS) go through PyAV's muxer. Chunks come at `sample_rate`;
    `out_rate` (default: the same) resamples them with a streaming resampler.
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int, out_rate: int | None = None) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._container: av.container.OutputContainer | None = None
        rate = out_rate or sample_rate
        if fmt == "ogg":
            rate = _opus_rate(rate)
        self.out_rate = rate
        self._resampler: soxr.ResampleStream | None = None
        if rate != sample_rate:
            self._resampler = soxr.ResampleStream(sample_rate, rate, 1, dtype="float32")
        if fmt in ("wav", "pcm"):
            return
        muxer, codec, bit_rate = _AV_FORMATS[fmt]
        # Short Ogg pages, so each chunk reaches the client with the chunk, not a second later.
        options = {"page_duration": "100000"} if fmt == "ogg" else {}
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=muxer, options=options)
        self._stream = cast(AudioStream, self._container.add_stream(codec, rate=rate, layout="mono"))
        if bit_rate is not None:
            self._stream.bit_rate = bit_rate

    def _mux(self, samples: np.ndarray | None) -> bytes:
        assert self._container is not None
        frame = None
        if samples is not None and samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self.out_rate
        elif samples is not None:
            return b""
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def encode(self, audio: Audio) -> bytes:
        if audio.sample_rate != self.sample_rate:
            raise ValueError("a stream's chunks must share one sample rate")
        samples = np.clip(audio.samples, -1.0, 1.0).astype(np.float32)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        if self._container is None:
            return self._header() + to_pcm16(Audio(samples, self.out_rate))
        return self._mux(samples)

    def _header(self) -> bytes:
        """The open-ended WAV header, before the first bytes of a wav stream."""
        if self._started or self.format == "pcm":
            return b""
        self._started = True
        return wav_stream_header(self.out_rate)

    def finish(self) -> bytes:
        """The bytes that close the stream (codec delay, trailer); the encoder is done after."""
        rest = np.zeros(0, np.float32)
        if self._resampler is not None:
            rest = self._resampler.resample_chunk(rest, last=True)
        if self._container is None:
            return self._header() + to_pcm16(Audio(rest, self.out_rate))
        tail = self._mux(rest)
        tail += self._mux(None)
        self._container.close()
        return tail + self._sink.take()


def _opus_rate(sample_rate: int) -> int:
    return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)
