"""What a listener heard of a reply cut part-way: whole pieces, then the words of the piece playing
at the cut that had ended by then, its audio cut there too (services/turn_events.heard_reply)."""

from __future__ import annotations

import numpy as np

from backend.app.audio.types import Audio, SpokenWord
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import heard_reply

RATE = 1000


def piece(index: int, text: str, seconds: float, words: list[tuple[str, float, float]] | None) -> ReplyAudio:
    timed = None if words is None else tuple(SpokenWord(*w) for w in words)
    return ReplyAudio(Audio(np.ones(int(seconds * RATE), np.float32), RATE, timed), index, text)


FIRST = piece(0, "Hello there.", 1.0, [("Hello", 0.1, 0.5), ("there.", 0.55, 0.9)])
SECOND = piece(
    1,
    "It is a fine day.",
    2.0,
    [("It", 0.3, 0.4), ("is", 0.45, 0.6), ("a", 0.6, 0.7), ("fine", 0.75, 1.2), ("day.", 1.3, 1.9)],
)


def test_a_cut_inside_a_piece_keeps_the_words_that_had_ended() -> None:
    heard = heard_reply([FIRST, SECOND], 1.0 + 1.0)  # one second into the second piece
    assert heard.text == "Hello there. It is a"
    assert [a.duration for a in heard.audio] == [1.0, 1.0]  # the second piece's audio cut there
    assert [w.word for w in heard.audio[1].words or ()] == ["It", "is", "a", "fine"]  # its words kept


def test_a_word_still_being_said_at_the_cut_is_not_heard() -> None:
    assert heard_reply([FIRST, SECOND], 1.0 + 1.25).text == "Hello there. It is a fine"
    assert heard_reply([FIRST, SECOND], 1.0 + 1.15).text == "Hello there. It is a"


def test_cuts_at_the_edges() -> None:
    assert heard_reply([FIRST, SECOND], None).text == "Hello there. It is a fine day."
    assert heard_reply([FIRST, SECOND], 3.0).text == "Hello there. It is a fine day."
    assert heard_reply([FIRST, SECOND], 0.3).text == ""  # not even the first word had ended
    assert heard_reply([FIRST, SECOND], 0.0).text == ""


def test_a_piece_whose_words_are_not_known_counts_whole_once_begun() -> None:
    untimed = piece(1, "It is a fine day.", 2.0, None)
    assert heard_reply([FIRST, untimed], 1.2).text == "Hello there. It is a fine day."
    assert heard_reply([FIRST, untimed], 1.0).text == "Hello there."
