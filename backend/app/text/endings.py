"""Whether the words said so far leave a sentence hanging: the transcript's half of semantic turn
detection (the end-of-turn model hears the voice; this reads the words).

A speaker who stops to think after "book a table for" or "turn on the lights in the" has not
finished, however final the voice sounds (a synthesised voice, or a flat one, often does). An
English utterance does not end on an article, a possessive determiner, most conjunctions, a
contraction that needs its verb's object, or a filler ("um"); nor does a transcript that trails
off ("...", a comma, a dash). Only words that cannot close a sentence are listed: not
prepositions (questions end on one: "What is it for?"), not "her", "that", "so" or "though".
Other languages are left to the voice.
"""

from __future__ import annotations

import re

HANGING_WORDS = frozenset(
    {
        *("a", "an", "the", "my", "your", "its", "our", "their", "every"),
        *("and", "or", "but", "nor", "because", "although", "unless", "whereas", "whether", "than"),
        *("i'd", "i'll", "i'm", "you're", "we're", "they're", "it's", "there's"),
        *("very", "um", "uh", "er", "erm"),
    }
)
"""English words an utterance does not end on (lower case, apostrophes straight)."""

_TRAILING_OFF = re.compile(r"(\.\.\.|…|,|;|:|-|–|—)\s*$")
_LAST_WORD = re.compile(r"([\w']+)\W*$")


def sounds_unfinished(transcript: str, language: str | None = "en") -> bool:
    """True when the transcript so far leaves its sentence hanging (English only: another
    `language` and an empty transcript give False)."""
    text = transcript.strip().replace("’", "'")
    if not text or language not in (None, "en"):
        return False
    if _TRAILING_OFF.search(text):
        return True
    last = _LAST_WORD.search(text)
    return last is not None and last.group(1).lower() in HANGING_WORDS
