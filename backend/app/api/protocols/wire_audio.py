"""Audio as a realtime protocol carries it: PCM16 at a chosen rate, or telephone G.711 (µ-law,
A-law) at 8 kHz. `WireFormat` names one; a `WireDecoder` turns its bytes into the session's
16 kHz float samples, a `WireEncoder` turns reply audio (any rate) into its bytes. Both resample
as a stream, so pieces join without clicks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr

from backend.app.audio.encode import to_pcm16
from backend.app.audio.g711 import G711, G711_RATE
from backend.app.audio.types import Audio

Kind = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]


@dataclass(frozen=True)
class WireFormat:
    kind: Kind
    rate: int

    @property
    def sample_bytes(self) -> int:
        return 2 if self.kind == "audio/pcm" else 1

    def view(self) -> dict[str, Any]:
        """As OpenAI's session object shows it."""
        if self.kind == "audio/pcm":
            return {"type": self.kind, "rate": self.rate}
        return {"type": self.kind}

    def seconds(self, data_bytes: int) -> float:
        return data_bytes / self.sample_bytes / self.rate


PCMU = WireFormat("audio/pcmu", G711_RATE)
PCMA = WireFormat("audio/pcma", G711_RATE)


def _law(kind: Kind) -> G711 | None:
    if kind == "audio/pcm":
        return None
    return G711("pcmu" if kind == "audio/pcmu" else "pcma")


class WireDecoder:
    """Bytes in `fmt` to float32 samples at `rate`."""

    def __init__(self, fmt: WireFormat, rate: int) -> None:
        self.format = fmt
        self._law = _law(fmt.kind)
        self._resampler = (
            soxr.ResampleStream(fmt.rate, rate, 1, dtype="float32") if fmt.rate != rate else None
        )

    def problem(self, data: bytes) -> str | None:
        """Why `data` cannot be this format's audio, or None."""
        if self._law is None and len(data) % 2:
            return "PCM16 has two bytes a sample; this has an odd number"
        return None

    def decode(self, data: bytes) -> np.ndarray:
        if self._law is not None:
            samples = self._law.decode(data)
        else:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples


class WireEncoder:
    """Reply audio (float32 at any rate, piece by piece) to bytes in `fmt`."""

    def __init__(self, fmt: WireFormat) -> None:
        self.format = fmt
        self._law = _law(fmt.kind)
        self._resampler: soxr.ResampleStream | None = None
        self._from = fmt.rate

    def encode(self, samples: np.ndarray, rate: int) -> bytes:
        if rate != self._from or (self._resampler is None and rate != self.format.rate):
            self._from = rate
            self._resampler = (
                soxr.ResampleStream(rate, self.format.rate, 1, dtype="float32")
                if rate != self.format.rate
                else None
            )
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return self._bytes(samples)

    def flush(self) -> bytes:
        """The resampler's tail, at the end of a reply."""
        if self._resampler is None:
            return b""
        tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        self._resampler = None
        return self._bytes(tail)

    def _bytes(self, samples: np.ndarray) -> bytes:
        if self._law is not None:
            return self._law.encode(samples)
        return to_pcm16(Audio(samples, self.format.rate))
