"""Any upload a browser or phone records -> mono float32 at the rate a model needs.

Decoding runs in-process with PyAV (FFmpeg) from memory: no temporary files, and none of
faster-whisper's `decode_audio`, which forces a full garbage collection on every call.
"""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import soxr

from backend.app.audio.types import Audio
from backend.app.core.errors import AppError, AudioTooLongError, InvalidAudioError


def resample(audio: Audio, sample_rate: int) -> Audio:
    """Return `audio` at `sample_rate` (soxr, high quality)."""
    if audio.sample_rate == sample_rate or len(audio.samples) == 0:
        return Audio(audio.samples, sample_rate, audio.words)
    samples = soxr.resample(audio.samples, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, audio.words)


# FFmpeg probes up to 5 MB by default before decoding; read through a Python file object that costs
# ~40 ms for a 3 s stereo WAV. Audio stream parameters are known long before 64 KB.
_PROBE_OPTIONS = {"probesize": "65536"}

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
"""Rates accepted from a file (telephony's 8 kHz down to 1 kHz, up to DXD's 352.8 kHz)."""
MAX_KEPT_RATE = 48_000
"""Without a target rate, audio above this is brought down to it while it is decoded."""
MAX_CHANNELS = 32
MAX_FRAME_SAMPLES = 1 << 22
"""No codec's frame holds more (FLAC's largest is 65,535 samples x 8 channels)."""

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


PLANE_POINTERS = 8
"""FFmpeg's AV_NUM_DATA_POINTERS. PyAV counts a planar frame's planes by reading its channel
pointers until one is NULL; with this many channels or more there is no NULL after the last one,
so it reads past them (a 7.1 AAC or Opus file crashed the process)."""


class _Packer:
    """Planar frames of `PLANE_POINTERS` channels or more, made packed by FFmpeg (one plane, the
    same channels, rate and sample type) before PyAV reads them."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._setup: tuple[str, str, int] | None = None

    def __call__(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        setup = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        if self._resampler is None or setup != self._setup:
            # The same rate: FFmpeg converts each frame as it comes, holding nothing back.
            self._resampler = av.AudioResampler(
                format=frame.format.packed, layout=frame.layout, rate=frame.sample_rate
            )
            self._setup = setup
        return list(self._resampler.resample(frame))


def _frame_to_mono(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """One decoded frame as mono float32, whatever its sample format.

    Channels are averaged here rather than by FFmpeg's resampler, whose stereo downmix adds +3 dB
    for identical channels (and can clip) and which costs more than this numpy pass. A planar
    frame must have fewer than `PLANE_POINTERS` channels (see `_Packer`).
    """
    assert not (frame.format.is_planar and channels >= PLANE_POINTERS)
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T  # packed: interleaved samples
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype in _INT_SCALE:
        samples = data.astype(np.float32) / np.float32(_INT_SCALE[data.dtype])
    else:
        samples = data.astype(np.float32, copy=False)
    mono: np.ndarray = samples[0] if samples.shape[0] == 1 else samples.mean(axis=0, dtype=np.float32)
    return mono


def decode_audio(data: bytes, sample_rate: int | None = None, max_seconds: float | None = None) -> Audio:
    """Decode a whole audio file held in memory to mono float32.

    `sample_rate`: the rate to return (None keeps the file's, up to 48 kHz). Each frame is mixed to
    mono and resampled as it is decoded, so memory grows with the audio at the returned rate, never
    with the file's own (a small file can declare a huge rate). `max_seconds`: refuse longer audio
    (`AudioTooLongError`, 422) as soon as decoding passes the limit, before the rest is decoded.
    Raises `InvalidAudioError` for anything that is not usable audio, whatever the container
    parser made of its header.
    """
    if not data:
        raise InvalidAudioError("the audio file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=_PROBE_OPTIONS)
    except (av.FFmpegError, ValueError, OSError, AttributeError, TypeError, OverflowError) as e:
        raise InvalidAudioError(f"the upload is not a readable audio file ({e})") from e
    with container:
        try:
            return _decode_stream(container, sample_rate, max_seconds)
        except (AppError, MemoryError):
            raise
        except Exception as e:
            # PyAV hands on whatever the header said (0 bits per sample, an unknown sub-format, a
            # codec without a rate): none of it is the server's fault.
            raise InvalidAudioError(f"the audio could not be decoded ({type(e).__name__}: {e})") from e


def _decode_stream(container: Any, sample_rate: int | None, max_seconds: float | None) -> Audio:
    if not container.streams.audio:
        raise InvalidAudioError("the file has no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise InvalidAudioError("the audio stream's codec is unknown or its header is invalid")
    _check_header(stream.codec_context)
    decoder = _Decoder(sample_rate, max_seconds)
    try:
        for frame in container.decode(stream):
            decoder.add(frame)
    except av.FFmpegError as e:
        if not decoder.decoded:
            raise InvalidAudioError(f"the audio could not be decoded ({e})") from e
        # A truncated file: keep what decoded, as ffmpeg itself does.
    if not decoder.decoded:
        raise InvalidAudioError("the file holds no decodable audio")
    return decoder.finish()


def _check_header(codec: Any) -> None:
    """Refuse at once a header whose rate or channel count no decoded output could make usable."""
    rate = int(codec.sample_rate or 0)
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"the audio's sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    channels = int(codec.channels or 0)
    if channels > MAX_CHANNELS:
        raise InvalidAudioError(f"the audio has {channels} channels; at most {MAX_CHANNELS} are accepted")


class _Decoder:
    """Collects decoded frames as mono float32 at the output rate, counting the input as it goes."""

    def __init__(self, sample_rate: int | None, max_seconds: float | None) -> None:
        self.target = sample_rate
        self.max_seconds = max_seconds
        self.native = 0
        self.decoded = 0  # input samples (per channel)
        self._resampler: soxr.ResampleStream | None = None
        self._packer = _Packer()
        self._chunks: list[np.ndarray] = []

    def add(self, frame: av.AudioFrame) -> None:
        rate, count = int(frame.sample_rate or 0), int(frame.samples)
        channels = len(frame.layout.channels) or 1
        if not self.native:
            self._start(rate)
        elif rate != self.native:
            raise InvalidAudioError(f"the sample rate changes within the stream ({self.native} -> {rate} Hz)")
        if channels > MAX_CHANNELS or count * channels > MAX_FRAME_SAMPLES:
            raise InvalidAudioError(
                f"a frame of {count} samples x {channels} channels is not plausible audio"
            )
        self.decoded += count
        if self.max_seconds is not None and self.decoded > self.max_seconds * self.native:
            raise AudioTooLongError(
                f"the audio is longer than the {self.max_seconds:g} s limit (MAX_AUDIO_SECONDS)"
            )
        if frame.format.is_planar and channels >= PLANE_POINTERS:
            pieces = [_frame_to_mono(packed, channels) for packed in self._packer(frame)]
        else:
            pieces = [_frame_to_mono(frame, channels)]
        for mono in pieces:
            if not np.all(np.isfinite(mono)):
                mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
            if self._resampler is not None:
                mono = self._resampler.resample_chunk(mono)
            if len(mono):
                self._chunks.append(mono)

    def _start(self, rate: int) -> None:
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise InvalidAudioError(
                f"the audio's sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
            )
        self.native = rate
        self.target = self.target or min(rate, MAX_KEPT_RATE)
        if self.target != rate:
            self._resampler = soxr.ResampleStream(rate, self.target, 1, dtype="float32", quality="HQ")

    def finish(self) -> Audio:
        if self._resampler is not None:
            self._chunks.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        # Lossy codecs and resampling overshoot a little; models expect [-1, 1].
        np.clip(samples, -1.0, 1.0, out=samples)
        assert self.target is not None
        return Audio(np.ascontiguousarray(samples, dtype=np.float32), self.target)
