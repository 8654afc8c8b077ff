"""Raw PCM as streaming protocols carry it (Wyoming's audio chunks): any rate, width and channel
count in, mono float32 at one rate out, resampled as it arrives (soxr) and bounded in length."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from backend.app.audio.decode import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from backend.app.audio.types import Audio
from backend.app.core.errors import AudioTooLongError, InvalidAudioError, OverloadedError

WIDTHS = (1, 2, 3, 4)
"""Bytes per sample: signed little-endian integers (8-bit signed, as Python's audioop and the
Wyoming library's converter read it)."""


def check_format(rate: object, width: object, channels: object) -> tuple[int, int, int]:
    """(rate, width, channels) as ints, or InvalidAudioError naming what is wrong."""
    for name, value in (("rate", rate), ("width", width), ("channels", channels)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidAudioError(f"audio {name} must be an integer, got {value!r}")
    assert isinstance(rate, int) and isinstance(width, int) and isinstance(channels, int)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(f"audio rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if width not in WIDTHS:
        raise InvalidAudioError(f"audio width {width} is not 1, 2, 3 or 4 bytes")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"audio channels {channels} is outside 1-{MAX_CHANNELS}")
    return rate, width, channels


def pcm_to_mono(data: bytes, width: int, channels: int) -> npt.NDArray[np.float32]:
    """Interleaved signed little-endian PCM -> mono float32 in [-1, 1] (a trailing partial frame is
    dropped)."""
    frame = width * channels
    data = data[: len(data) - len(data) % frame]
    if width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
        samples = ints.astype(np.float32) / float(1 << 23)
    else:
        dtype = {1: "i1", 2: "<i2", 4: "<i4"}[width]
        samples = np.frombuffer(data, dtype=dtype).astype(np.float32) / float(1 << (8 * width - 1))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


ARRAY_OVERHEAD = 128
"""Bytes an array costs beyond its samples (the object and its place in a list)."""
SMALL_CHUNK = 4096
"""Converted chunks shorter than this many samples are joined in groups (`MERGE_EVERY`) as they
arrive, so that a client sending tiny chunks does not cost an array object per chunk."""
MERGE_EVERY = 64


def stored_bytes(nbytes: int, rate: int, width: int, channels: int, sample_rate: int) -> int:
    """What `nbytes` of PCM in the given format cost once held (mono float32 at `sample_rate`):
    the unit to bound buffered audio in, whatever format a client declares."""
    frames = nbytes // (width * channels)
    return int(np.ceil(frames * sample_rate / rate)) * 4 + ARRAY_OVERHEAD


class PcmCollector:
    """Chunks of PCM in, one utterance at `sample_rate` out; longer than `max_seconds` is refused
    as it arrives, before it is held. A chunk's format may differ from the last one's."""

    def __init__(self, sample_rate: int, max_seconds: float) -> None:
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._small: list[npt.NDArray[np.float32]] = []
        self._samples = 0
        self._rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None

    @property
    def duration(self) -> float:
        return self._samples / self.sample_rate

    def cost(self, nbytes: int, rate: int, width: int, channels: int) -> int:
        """What adding a chunk of `nbytes` in this format will hold, at most (checked format)."""
        rate, width, channels = check_format(rate, width, channels)
        return stored_bytes(nbytes, rate, width, channels, self.sample_rate)

    def add(self, data: bytes, rate: int, width: int, channels: int) -> None:
        rate, width, channels = check_format(rate, width, channels)
        incoming = len(data) // (width * channels) / rate
        if self.duration + incoming > self.max_seconds:
            raise AudioTooLongError(f"the audio is longer than {self.max_seconds:g} s")
        if rate != self._rate:
            self._flush()
            self._rate = rate
            self._resampler = (
                soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality="HQ")
                if rate != self.sample_rate
                else None
            )
        samples = pcm_to_mono(data, width, channels)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._keep(samples)

    def finish(self) -> Audio:
        """All the audio so far, joined (the resampler's tail flushed)."""
        self._flush()
        self._merge_small()
        chunks, self._chunks, self._samples = self._chunks, [], 0
        joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Audio(np.ascontiguousarray(joined, dtype=np.float32), self.sample_rate)

    def _flush(self) -> None:
        if self._resampler is not None:
            self._keep(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self._resampler = None
        self._rate = None

    def _keep(self, samples: npt.NDArray[np.float32]) -> None:
        if not len(samples):
            return
        self._samples += len(samples)
        if len(samples) >= SMALL_CHUNK:
            self._merge_small()
            self._chunks.append(np.asarray(samples, dtype=np.float32))
            return
        self._small.append(np.array(samples, dtype=np.float32))  # a copy: not a view of a bigger buffer
        if len(self._small) >= MERGE_EVERY:
            self._merge_small()

    def _merge_small(self) -> None:
        if self._small:
            self._chunks.append(np.concatenate(self._small))
            self._small = []


class AudioBudget:
    """Bytes of audio all connections may hold together, as held (see `pcm.stored_bytes`)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0

    def take(self, nbytes: int) -> None:
        if self.used + nbytes > self.limit:
            raise OverloadedError(
                f"the server holds {self.limit / 1024 / 1024:g} MB of audio for transcription at most "
                "(WYOMING_MAX_BUFFERED_MB); send shorter audio or retry shortly",
                retry_after_s=5,
            )
        self.used += nbytes

    def give(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)
