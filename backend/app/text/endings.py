"""Whether the words said so far leave a sentence hanging: the transcript's half of semantic turn
detection (the end-of-turn model hears the voice; this reads the words).

A speaker who stops to think after "book a table for" or "turn on the lights in the" has not
finished, however final the voice sounds (a synthesised voice, or a flat one, often does). An
English utterance does not end on an article, a possessive determiner, most conjunctions, a
contraction that needs its verb's object, or a filler ("um"); nor does a transcript that trails
off ("...", a comma, a dash). Only words that cannot close a sentence are listed: not "her",
"that", "so" or "though". A preposition closes a question ("What is it for?", "Tell me where you
are from"), so it leaves the sentence hanging only when no question word comes before it ("Send a
message to", "Book a table for"). Other languages are left to the voice.
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

PREPOSITIONS = frozenset(
    {"for", "to", "of", "at", "with", "from", "into", "onto", "between", "without", "during"}
)
"""Prepositions that are not also particles or adverbs: "turn the lights on", "I've seen it
before" and "come by" end sentences."""
QUESTION_WORDS = frozenset({"what", "who", "whom", "whose", "where", "which", "how", "when", "why"})
TO_ENDS_AFTER = frozenset(
    {"want", "wants", "love", "like", "have", "has", "had", "need", "needs", "going", "got", "ought"}
    | {"able", "try", "tried", "hope", "plan", "mean", "meant", "used", "supposed", "allowed", "trying"}
)
"""Verbs after which "to" closes a sentence: "I'd love to", "you don't have to"."""

_TRAILING_OFF = re.compile(r"(\.\.\.|…|-|–|—)\s*$")
"""Trailing off. A trailing comma, semicolon or colon is not: like a final period it is the
transcriber's guess, not the speaker's (Moonshine ended "How tall is the Eiffel Tower" with a
comma now and then), so the words before it decide."""
_WORD = re.compile(r"[\w']+")
_SENTENCE_END = re.compile(r"[.?!]+\s+")


def sounds_unfinished(transcript: str, language: str | None = "en") -> bool:
    """True when the transcript so far leaves its sentence hanging (English only: another
    `language` and an empty transcript give False)."""
    text = transcript.strip().replace("’", "'")
    if not text or language not in (None, "en"):
        return False
    if _TRAILING_OFF.search(text):
        return True
    last_sentence = _SENTENCE_END.split(text)[-1]
    words = [word.lower() for word in _WORD.findall(last_sentence)]
    if not words:
        return False
    if words[-1] in HANGING_WORDS:
        return True
    if words[-1] == "to" and len(words) > 1 and words[-2] in TO_ENDS_AFTER:
        return False
    return words[-1] in PREPOSITIONS and not QUESTION_WORDS.intersection(words[:-1])
