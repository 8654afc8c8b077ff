"""Small edits of synthesised audio: trim silent edges, fade in and out, change the tempo."""

from __future__ import annotations

import itertools
from fractions import Fraction

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
    return audio.with_samples(audio.samples[start:end], offset=-start / audio.sample_rate)


def fade_edges(audio: Audio, fade_ms: float = 5.0) -> Audio:
    """Short linear fades at both ends, so that joins do not click."""
    samples = audio.samples.copy()
    n = min(len(samples) // 2, int(audio.sample_rate * fade_ms / 1000))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        samples[:n] *= ramp
        samples[-n:] *= ramp[::-1]
    return audio.with_samples(samples)


def change_tempo(audio: Audio, factor: float) -> Audio:
    """Play `audio` `factor` times faster without changing its pitch (FFmpeg's atempo filter,
    chained for factors below 0.5, its lower bound)."""
    import av
    from av.filter import Graph

    if factor == 1.0 or audio.samples.size == 0:
        return audio
    stages: list[float] = []
    remaining = factor
    while remaining < 0.5:
        stages.append(0.5)
        remaining /= 0.5
    stages.append(remaining)
    rate = audio.sample_rate
    graph = Graph()
    nodes = [graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))]
    nodes += [graph.add("atempo", f"{stage:.6f}") for stage in stages]
    nodes.append(graph.add("abuffersink"))
    for source, target in itertools.pairwise(nodes):
        source.link_to(target)
    graph.configure()
    samples = audio.samples.reshape(1, -1).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    graph.push(frame)
    graph.push(None)
    out: list[np.ndarray] = []
    while True:
        try:
            pulled = graph.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            break
        out.append(pulled.to_ndarray().reshape(-1))
    stretched = np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
    return audio.with_samples(stretched, scale=1.0 / factor)
