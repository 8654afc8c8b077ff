"""Word and character error rates: how far a transcript is from the words meant, for speech round
trips (the tests, the benchmarks and `scripts.gpu_check`) that must not demand exact text. Words
for Latin script; characters for Chinese (Traditional and Simplified count as the same)."""

from __future__ import annotations

import re

from backend.app.text.chinese import HAN, to_simplified


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    return _distance(words(reference), words(hypothesis))


def han_characters(text: str) -> list[str]:
    """The Chinese characters of `text`, in Simplified form (punctuation, spaces, Latin dropped)."""
    return HAN.findall(to_simplified(text))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over Chinese characters, divided by the reference length."""
    return _distance(han_characters(reference), han_characters(hypothesis))


def _distance(ref: list[str], hyp: list[str]) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)
