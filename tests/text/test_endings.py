"""The transcript's half of semantic turn detection: words that leave an English sentence hanging."""

from __future__ import annotations

import pytest

from backend.app.text.endings import sounds_unfinished


@pytest.mark.parametrize(
    "transcript",
    [
        "I would like to book a table for two and",
        "Turn on the lights in the",
        "Play something by my",
        "I need it because",
        "It's bigger than",
        "I want to, um",
        "What's the weather like in Paris or...",
        "Well, I'm —",
        "Set an alarm for seven and …",
        "Please send a message to",
        "Where is the station? I need a ticket to",  # the question before does not count
        "I would like to book a table for.",  # the period is the transcriber's, not the speaker's
    ],
)
def test_a_hanging_sentence_is_unfinished(transcript: str) -> None:
    assert sounds_unfinished(transcript)


@pytest.mark.parametrize(
    "transcript",
    [
        "How tall is the Eiffel Tower?",
        "What is it for?",  # questions end on a preposition
        "Where are you from?",
        "Tell me where you are from",
        "Turn the lights on.",
        "I've never seen it before.",
        "I'd love to.",
        "You don't have to!",
        "I told her.",
        "I think so.",
        "It's good, though.",
        "Turn on the lights.",
        "Thanks!",
        "How tall is the Eiffel Tower,",  # the transcriber's comma, not the speaker's
        "",
    ],
)
def test_a_finished_sentence_is_not(transcript: str) -> None:
    assert not sounds_unfinished(transcript)


def test_other_languages_are_left_to_the_voice() -> None:
    assert not sounds_unfinished("Je voudrais réserver une table pour la", "fr")
    assert not sounds_unfinished("我想订一张", "zh")
    assert sounds_unfinished("Book a table for the", None)
