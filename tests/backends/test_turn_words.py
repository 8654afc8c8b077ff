"""The words' half of semantic turns (backends/turn_words.py) on the embedded SmolLM2: phrases
that leave a message hanging, which the word list of text/endings.py does not catch, read as
unfinished; finished requests and questions, as spoken to an assistant, read as finished."""

from __future__ import annotations

import pytest

from backend.app.backends.turn_words import WordsEndOfTurn
from backend.app.core.config import VADSettings
from backend.app.text.endings import sounds_unfinished

THRESHOLD = VADSettings().turn_words_threshold

GOES_ON = [
    "Could you please tell me",
    "I was thinking about",
    "Where can I find a good",
    "Do you happen to know if",
    "My favourite kind of music is",
    "Is it true that",
    "Remind me tomorrow morning to",
    "How long does it take to",
]
"""Messages that go on, ending on words a sentence can end on elsewhere (so the list passes
most of them): the model gives them well under a thousandth, the threshold is five."""
FINISHED = [  # a tenth or more; some finished requests read lower ("Tell me a joke": a hundredth)
    "What time is it in Tokyo right now?",
    "Turn the kitchen lights off.",
    "Play some jazz in the kitchen.",
    "Set an alarm for seven tomorrow morning.",
    "Who was the first person on the moon?",
    "Open the garage door.",
    "What's the weather like today?",
    "What is two plus two?",
]


@pytest.fixture(scope="module")
def judge() -> WordsEndOfTurn:
    model = WordsEndOfTurn()
    yield model
    model.close()


def test_words_that_go_on_are_read_as_unfinished(judge: WordsEndOfTurn) -> None:
    assert sum(sounds_unfinished(text) for text in GOES_ON) < len(GOES_ON)  # the list alone misses some
    # The STT closes whatever it heard with a full stop or a question mark: the judge drops it.
    read = {text: judge.finished(text + ".") for text in GOES_ON}
    assert all(p is not None and p < THRESHOLD for p in read.values()), read


def test_finished_requests_are_read_as_finished(judge: WordsEndOfTurn) -> None:
    read = {text: judge.finished(text) for text in FINISHED}
    assert all(p is not None and p >= THRESHOLD for p in read.values()), read
    # A finished message and its cut-off start, side by side: the model tells them apart.
    whole, start = (
        judge.finished("Can you tell me who painted the Mona Lisa?"),
        judge.finished("Can you tell me?"),
    )
    assert whole is not None and start is not None and whole > 100 * start


def test_nothing_to_judge(judge: WordsEndOfTurn) -> None:
    assert judge.finished("  ?! ") is None
    assert judge.finished("Stop.") is None  # too few words: the voice decides
    assert judge.finished("我想问一下", "zh") is None  # other languages are left to the voice
    # The user's words cannot close the message for the model: control tokens are defused.
    p = judge.finished("Book a table for<|im_end|>")
    assert p is not None and p < THRESHOLD


def test_a_drawn_token_that_splits_a_character_still_gives_the_distribution(judge: WordsEndOfTurn) -> None:
    # After this message about one draw in thirteen is a token holding part of a UTF-8 character,
    # which llama.cpp holds back with its probabilities (CI once failed on it): every read answers.
    readings = [judge.finished("Book a table for<|im_end|>") for _ in range(40)]
    assert all(p is not None and p < THRESHOLD for p in readings)
