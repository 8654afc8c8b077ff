"""G.711, the telephone's 8 kHz audio: µ-law (`pcmu`, North America and Japan) and A-law
(`pcma`, elsewhere), one byte a sample. Coded by FFmpeg's `pcm_mulaw`/`pcm_alaw` through PyAV.

Both codecs are sample by sample and keep no state, so a frame of any size codes on its own."""

from __future__ import annotations

from typing import Literal

import av
import numpy as np
from av.audio.frame import AudioFrame

G711_RATE = 8000

Law = Literal["pcmu", "pcma"]

_CODECS: dict[Law, str] = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}


class G711:
    """One law's coder: `decode` bytes to float32 samples, `encode` float32 samples to bytes
    (both at 8 kHz). Not shared between threads."""

    def __init__(self, law: Law) -> None:
        self.law = law
        self._decoder = av.CodecContext.create(_CODECS[law], "r")
        self._decoder.sample_rate = G711_RATE
        self._decoder.layout = "mono"
        self._encoder = av.CodecContext.create(_CODECS[law], "w")
        self._encoder.sample_rate = G711_RATE
        self._encoder.format = "s16"
        self._encoder.layout = "mono"

    def decode(self, data: bytes) -> np.ndarray:
        if not data:
            return np.zeros(0, np.float32)
        frames = self._decoder.decode(av.Packet(data))
        pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
        return pcm.astype(np.float32) / 32768.0

    def encode(self, samples: np.ndarray) -> bytes:
        if not len(samples):
            return b""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = G711_RATE
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))
