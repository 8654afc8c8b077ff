"""Words of a text placed on its speech: from the sounds an engine spoke and when.

An engine that knows how long it held each sound (a phoneme, a Mandarin syllable) gives them as
`Sound`s, in order. The text's words are read one by one the way the engine reads (`reading`: a
word's phonemes, or its syllables), and the two sequences are matched letter by letter (difflib):
a word is heard from the first to the last sound matched to it. Matching, rather than counting
words, holds when the engine's reading of a sentence differs from its words read alone: espeak
runs "of the" together and reads "$5" as "five dollars", a number is several words, stress moves.
A word nothing matched (a symbol the engine skipped) takes the moment between its neighbours.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from backend.app.audio.types import SpokenWord
from backend.app.text.chinese import HAN
from backend.app.text.segment import join_pieces

_HAN_SPLIT = re.compile(f"({HAN.pattern})")
_PUNCTUATION = "，。！？；：、,.!?;:…）)」』”’\"'"
_IGNORED = frozenset("ˈˌ'")
"""Stress marks: the same word is stressed differently in a sentence and alone."""


@dataclass(frozen=True)
class Sound:
    """One unit the engine spoke (a phoneme, a syllable's character), from `start` to `end` s."""

    symbol: str
    start: float
    end: float


def words_of(text: str) -> list[str]:
    """The words of `text` as captions show them: runs between spaces, each Chinese character on
    its own; punctuation stays with the word before it."""
    words: list[str] = []
    for run in text.split():
        for part in _HAN_SPLIT.split(run):
            if not part:
                continue
            lead = len(part) - len(part.lstrip(_PUNCTUATION))
            if words and lead and part is not run:  # "。OK" after a character: "。" ends it
                words[-1] += part[:lead]
                part = part[lead:]
            if not part:
                continue
            if words and not any(c.isalnum() for c in part) and part is not run:
                words[-1] += part
            else:
                words.append(part)
    return words


def joined(words: Sequence[str]) -> str:
    """Words back into text: Chinese without spaces, other scripts with one."""
    return join_pieces(list(words))


def _letters(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c)[0] == "L" and c not in _IGNORED)


def place_words(text: str, sounds: Sequence[Sound], reading: Callable[[str], str]) -> tuple[SpokenWord, ...]:
    """Each word of `text` with the span of the sounds matched to it (see the module's doc)."""
    words = words_of(text)
    if not words:
        return ()
    read = [_letters(reading(word)) for word in words]
    expected = [index for index, letters in enumerate(read) for _ in letters]  # each letter's word
    readings = "".join(read)
    spoken = [(at, c) for at, sound in enumerate(sounds) for c in _letters(sound.symbol)]
    owner: list[int | None] = [None] * len(sounds)
    matcher = SequenceMatcher(None, readings, "".join(c for _, c in spoken), autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            owner[spoken[b + k][0]] = expected[a + k]
    _extend(owner, sounds)
    spans: list[list[float]] = [[] for _ in words]
    for at, owned_by in enumerate(owner):
        if owned_by is not None:
            spans[owned_by] += (sounds[at].start, sounds[at].end)
    return _filled(words, spans, sounds[-1].end if sounds else 0.0)


def _extend(owner: list[int | None], sounds: Sequence[Sound]) -> None:
    """Sounds nothing matched go to the word they are spoken within: the one before them, else the
    one after, as long as no boundary (a space, a pause, punctuation) comes between."""
    for order in (range(len(sounds)), range(len(sounds) - 1, -1, -1)):
        current: int | None = None
        for at in order:
            symbol = sounds[at].symbol
            if _is_boundary(symbol):
                current = None
            elif owner[at] is not None:
                current = owner[at]
            elif _letters(symbol) and current is not None:
                owner[at] = current


def _is_boundary(symbol: str) -> bool:
    return not symbol or any(c.isspace() or unicodedata.category(c)[0] in "PSZ" for c in symbol)


def _filled(words: list[str], spans: list[list[float]], length: float) -> tuple[SpokenWord, ...]:
    """Words with times, in order and never overlapping; a run of words with nothing matched
    shares the time between its neighbours."""
    out: list[SpokenWord] = []
    previous_end = 0.0
    index = 0
    while index < len(words):
        span = spans[index]
        if span:
            start, end = max(min(span), previous_end), max(max(span), previous_end)
            out.append(SpokenWord(words[index], round(float(start), 3), round(float(end), 3)))
            previous_end = end
            index += 1
            continue
        run_end = next((i for i in range(index, len(words)) if spans[i]), len(words))
        following = min(spans[run_end]) if run_end < len(words) else length
        step = max(0.0, following - previous_end) / (run_end - index)
        for k in range(index, run_end):
            start = previous_end + step * (k - index)
            out.append(SpokenWord(words[k], round(float(start), 3), round(float(start + step), 3)))
        previous_end = max(previous_end, following)
        index = run_end
    return tuple(out)


def heard_words(words: Sequence[SpokenWord], heard_s: float) -> list[SpokenWord]:
    """The words that had ended when the listener stopped hearing, `heard_s` into the audio."""
    return [w for w in words if w.end <= heard_s + 1e-3]
