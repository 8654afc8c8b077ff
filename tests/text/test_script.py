"""Dialogue scripts: labels, names, CJK colons, blank lines, and what stays plain text."""

from __future__ import annotations

import pytest

from backend.app.core.errors import InvalidInputError
from backend.app.text.script import MAX_LABEL_CHARS, parse_script, script_of, speaker_key


def turns(text: str, known: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    script = parse_script(text, known)
    assert script is not None, "expected a script"
    return [(t.speaker, t.label, t.text) for t in script.turns]


def test_vibevoice_numbered_labels() -> None:
    text = "Speaker 1: Welcome back.\nSpeaker 2: Thanks for having me.\nspeaker 01: Let's begin."
    assert turns(text) == [
        ("1", "Speaker 1", "Welcome back."),
        ("2", "Speaker 2", "Thanks for having me."),
        ("1", "Speaker 1", "Let's begin."),  # `speaker 01` is the same speaker, labelled as first written
    ]


def test_one_numbered_label_is_enough() -> None:
    assert turns("Speaker 3: Just me today.") == [("3", "Speaker 3", "Just me today.")]


def test_named_speakers_and_full_width_colons() -> None:
    text = "Alice: Hi Bob.\nBob: Hi Alice.\n小明：你好。\n李 雷：早上好！"
    script = parse_script(text)
    assert script is not None
    assert script.speakers == ["alice", "bob", "小明", "李 雷"]
    assert [t.text for t in script.turns] == ["Hi Bob.", "Hi Alice.", "你好。", "早上好！"]


def test_blank_lines_separate_and_unlabelled_lines_continue_a_turn() -> None:
    text = "Alice: First line\nand its second line.\n\n\nBob: Reply.\n   \n"
    assert turns(text) == [("alice", "Alice", "First line\nand its second line."), ("bob", "Bob", "Reply.")]


def test_an_unlabelled_first_line_is_spoken_by_the_first_speaker() -> None:
    text = "Episode three\nAlice: Welcome.\nBob: Hello."
    assert turns(text)[0] == ("alice", "Alice", "Episode three\nWelcome.")
    assert len(turns(text)) == 2  # nothing is dropped


def test_plain_text_stays_plain() -> None:
    for text in (
        "Hello there. How are you today?",
        "Note: the meeting is at 10:30 tomorrow.",  # one label-shaped line only
        "See http://example.com for details.\nIt opens at 9:00.",
        "Why? Because: reasons.\nWell, okay: fine.",  # sentence punctuation is not a label
    ):
        assert parse_script(text) is None, text


def test_a_label_the_request_maps_makes_a_script() -> None:
    assert parse_script("Narrator: Once upon a time.") is None
    assert turns("Narrator: Once upon a time.", known=("narrator",)) == [
        ("narrator", "Narrator", "Once upon a time.")
    ]


def test_dialogue_flag_forces_either_reading() -> None:
    assert parse_script("Speaker 1: hi\nSpeaker 2: yo", dialogue=False) is None
    assert parse_script("Narrator: Once.", dialogue=True) is not None
    with pytest.raises(InvalidInputError, match="no line starts with a speaker label"):
        parse_script("no labels at all", dialogue=True)


def test_only_labels_or_empty_turns_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="nothing to speak"):
        parse_script("Speaker 1:\nSpeaker 2:   \nSpeaker 1: ...")
    with pytest.raises(InvalidInputError, match="nothing to speak"):
        script_of([])
    # Empty turns among real ones are dropped, the others keep their order.
    assert turns("Alice: \nBob: Hi.\nAlice: Bye.") == [("bob", "Bob", "Hi."), ("alice", "Alice", "Bye.")]


def test_overlong_labels_are_refused() -> None:
    long = "A" * 500
    with pytest.raises(InvalidInputError, match=f"500 characters; the limit is {MAX_LABEL_CHARS}"):
        parse_script(f"{long}: hello\n{long}: again")
    with pytest.raises(InvalidInputError, match="the limit is"):
        script_of([("B" * (MAX_LABEL_CHARS + 1), "text")])
    with pytest.raises(InvalidInputError, match="empty"):
        script_of([("  ", "text")])
    with pytest.raises(InvalidInputError, match="control"):
        script_of([("A\x00", "text")])


def test_five_speakers_parse_in_order() -> None:
    text = "\n".join(f"Speaker {n}: Line {n}." for n in range(1, 6))
    script = parse_script(text)
    assert script is not None and script.speakers == ["1", "2", "3", "4", "5"]


def test_speaker_keys() -> None:
    assert speaker_key("Speaker 1") == speaker_key("speaker01") == speaker_key("1") == "1"
    assert speaker_key("ＡＬＩＣＥ") == speaker_key("alice") == "alice"
    assert speaker_key("Mary  Ann") == "mary ann"
