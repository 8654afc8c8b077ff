"""The value type passed between audio layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SpokenWord:
    """A word of the text spoken, and when it is heard: seconds from the start of its audio."""

    word: str
    start: float
    end: float

    def shifted(self, seconds: float) -> SpokenWord:
        return SpokenWord(self.word, self.start + seconds, self.end + seconds)


Words = tuple[SpokenWord, ...]


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at `sample_rate` Hz; for synthesised speech, when the engine
    can say, where each word of its text falls (`words`; None: not known)."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    words: Words | None = None

    def with_samples(
        self, samples: npt.NDArray[np.float32], offset: float = 0.0, scale: float = 1.0
    ) -> Audio:
        """Other samples for the same speech: its words' times multiplied by `scale` (a tempo
        change), then moved by `offset` seconds (silence added before, or cut from, the start),
        kept within the new length; words that would start after its end are dropped (cut off)."""
        if self.words is None:
            return Audio(samples, self.sample_rate)
        length = len(samples) / self.sample_rate if self.sample_rate else 0.0
        words = []
        for word in self.words:
            start, end = word.start * scale + offset, word.end * scale + offset
            if start <= length + 1e-9:
                words.append(SpokenWord(word.word, min(length, max(0.0, start)), min(length, max(0.0, end))))
        return Audio(samples, self.sample_rate, tuple(words))

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Audio:
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate, ())

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
        samples = np.concatenate([chunk.samples for chunk in chunks])
        if any(chunk.words is None for chunk in chunks):
            return cls(samples, rate)
        words: list[SpokenWord] = []
        offset = 0
        for chunk in chunks:
            words += (w.shifted(offset / rate) for w in chunk.words or ())
            offset += len(chunk.samples)
        return cls(samples, rate, tuple(words))
