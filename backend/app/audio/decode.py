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
from backend.app.core.errors import AudioTooLongError, InvalidAudioError


def resample(audio: Audio, sample_rate: int) -> Audio:
    """Return `audio` at `sample_rate` (soxr, high quality)."""
    if audio.sample_rate == sample_rate or len(audio.samples) == 0:
        return Audio(audio.samples, sample_rate)
    samples = soxr.resample(audio.samples, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)


# FFmpeg probes up to 5 MB by default before decoding; read through a Python file object that costs
# ~40 ms for a 3 s stereo WAV. Audio stream parameters are known long before 64 KB.
_PROBE_OPTIONS = {"probesize": "65536"}

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as mono float32, whatever its sample format.

    Channels are averaged here rather than by FFmpeg's resampler, whose stereo downmix adds +3 dB
    for identical channels (and can clip) and which costs more than this numpy pass.
    """
    data = frame.to_ndarray()
    channels = len(frame.layout.channels) or 1
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

    `sample_rate`: resample to this rate (None keeps the file's). `max_seconds`: refuse longer audio
    (`AudioTooLongError`, 422) as soon as decoding passes the limit, before the rest is decoded and
    before any inference.
    Raises `InvalidAudioError` for anything that is not decodable audio.
    """
    if not data:
        raise InvalidAudioError("the audio file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=_PROBE_OPTIONS)
    except (av.FFmpegError, ValueError, OSError) as e:
        raise InvalidAudioError(f"the upload is not a readable audio file ({e})") from e
    with container:
        if not container.streams.audio:
            raise InvalidAudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        native_rate = stream.rate or stream.codec_context.sample_rate
        if not native_rate:
            raise InvalidAudioError("the audio stream has no sample rate")
        chunks: list[np.ndarray] = []
        total = 0
        limit = int(max_seconds * native_rate) if max_seconds else None
        try:
            for frame in container.decode(stream):
                chunk = _frame_to_mono(frame)
                chunks.append(chunk)
                total += len(chunk)
                if limit is not None and total > limit:
                    raise AudioTooLongError(
                        f"the audio is longer than the {max_seconds:g} s limit (MAX_AUDIO_SECONDS)"
                    )
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
