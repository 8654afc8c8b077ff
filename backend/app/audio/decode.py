"""Any upload a browser or phone records -> mono float32 at the rate a model needs.

Decoding runs in-process with PyAV (FFmpeg) from memory: no temporary files, and none of
faster-whisper's `decode_audio`, which forces a full garbage collection on every call.
"""

from __future__ import annotations

import io

import av
import numpy as np
import soxr

from backend.app.audio.types import Audio
from backend.app.core.errors import InvalidAudioError, PayloadTooLargeError


def resample(audio: Audio, sample_rate: int) -> Audio:
    """Return `audio` at `sample_rate` (soxr, high quality)."""
    if audio.sample_rate == sample_rate or len(audio.samples) == 0:
        return Audio(audio.samples, sample_rate)
    samples = soxr.resample(audio.samples, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)


def decode_audio(data: bytes, sample_rate: int | None = None, max_seconds: float | None = None) -> Audio:
    """Decode a whole audio file held in memory to mono float32.

    `sample_rate`: resample to this rate (None keeps the file's). `max_seconds`: refuse longer audio
    with a 413 as soon as decoding passes the limit, before the rest is decoded.
    Raises `InvalidAudioError` for anything that is not decodable audio.
    """
    if not data:
        raise InvalidAudioError("the audio file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as e:
        raise InvalidAudioError(f"the upload is not a readable audio file ({e})") from e
    with container:
        if not container.streams.audio:
            raise InvalidAudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        native_rate = stream.rate or stream.codec_context.sample_rate
        if not native_rate:
            raise InvalidAudioError("the audio stream has no sample rate")
        # Planar float at the native rate and layout; channels are averaged here (FFmpeg's own
        # downmix adds +3 dB for identical channels and can clip), soxr resamples after.
        resampler = av.AudioResampler(format="fltp", rate=native_rate)
        chunks: list[np.ndarray] = []
        total = 0
        limit = int(max_seconds * native_rate) if max_seconds else None
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().mean(axis=0, dtype=np.float32)
                    chunks.append(chunk)
                    total += len(chunk)
                if limit is not None and total > limit:
                    raise PayloadTooLargeError(f"the audio is longer than the {max_seconds:g} s limit")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except av.FFmpegError as e:
            if not chunks:
                raise InvalidAudioError(f"the audio could not be decoded ({e})") from e
            # A truncated file: keep what decoded, as ffmpeg itself does.
    if not chunks:
        raise InvalidAudioError("the file holds no decodable audio")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    audio = Audio(samples, native_rate)
    if sample_rate:
        audio = resample(audio, sample_rate)
    # Lossy codecs and resampling overshoot a little; models expect [-1, 1].
    return Audio(np.clip(audio.samples, -1.0, 1.0), audio.sample_rate)
