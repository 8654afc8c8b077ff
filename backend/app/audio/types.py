"""The value type passed between audio layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at `sample_rate` Hz."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Audio:
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)

    @classmethod
    def join(cls, chunks: Sequence[Audio], sample_rate: int | None = None) -> Audio:
        """The chunks one after the other (all at one rate); empty at `sample_rate` when there are none."""
        if not chunks:
            if sample_rate is None:
                raise ValueError("joining no chunks needs a sample_rate")
            return cls(np.zeros(0, dtype=np.float32), sample_rate)
        rate = chunks[0].sample_rate
        if any(chunk.sample_rate != rate for chunk in chunks):
            raise ValueError("cannot join audio at different sample rates")
        return cls(np.concatenate([chunk.samples for chunk in chunks]), rate)
