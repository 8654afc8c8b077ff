"""Small edits for joining synthesised segments: trim silent edges, fade in and out."""

from __future__ import annotations

import numpy as np

from backend.app.audio.types import Audio


def trim_silence(audio: Audio, threshold: float = 0.01, keep_ms: float = 30.0) -> Audio:
    """Drop leading and trailing samples quieter than `threshold` (of full scale), keeping
    `keep_ms` of margin so that soft onsets and releases survive. Silent audio stays as it is."""
    loud = np.flatnonzero(np.abs(audio.samples) >= threshold)
    if loud.size == 0:
        return audio
    margin = int(audio.sample_rate * keep_ms / 1000)
    start = max(0, int(loud[0]) - margin)
    end = min(len(audio.samples), int(loud[-1]) + 1 + margin)
    return Audio(audio.samples[start:end], audio.sample_rate)


def fade_edges(audio: Audio, fade_ms: float = 5.0) -> Audio:
    """Short linear fades at both ends, so that joins do not click."""
    samples = audio.samples.copy()
    n = min(len(samples) // 2, int(audio.sample_rate * fade_ms / 1000))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        samples[:n] *= ramp
        samples[-n:] *= ramp[::-1]
    return Audio(samples, audio.sample_rate)
