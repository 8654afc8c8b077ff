"""Placing a text's words on the sounds an engine spoke, and carrying them through audio edits."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.edit import change_tempo, fade_edges, trim_silence
from backend.app.audio.types import Audio, SpokenWord
from backend.app.text.subtitles import captions, word_cues
from backend.app.text.word_timing import Sound, heard_words, joined, place_words, words_of


def sounds(*spans: tuple[str, float, float]) -> list[Sound]:
    return [Sound(symbol, start, end) for symbol, start, end in spans]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, world! It's 3 p.m.", ["Hello,", "world!", "It's", "3", "p.m."]),
        ("今天天气很好，我们走吧。", ["今", "天", "天", "气", "很", "好，", "我", "们", "走", "吧。"]),
        ("价格是42元。OK吗？", ["价", "格", "是", "42", "元。", "OK", "吗？"]),
        ("  spaced\tout\nwords  ", ["spaced", "out", "words"]),
        ("", []),
    ],
)
def test_words_of_a_text(text: str, words: list[str]) -> None:
    assert words_of(text) == words


def test_joined_puts_spaces_only_between_latin_words() -> None:
    assert joined(["Hello,", "world!"]) == "Hello, world!"
    assert joined(["今", "天", "好。"]) == "今天好。"


def test_each_word_spans_the_sounds_matched_to_it() -> None:
    spoken = sounds(("h", 0.1, 0.2), ("i", 0.2, 0.3), (" ", 0.3, 0.4), ("j", 0.4, 0.5), ("o", 0.5, 0.7))
    words = place_words("hi jo", spoken, lambda word: word)
    assert words == (SpokenWord("hi", 0.1, 0.3), SpokenWord("jo", 0.4, 0.7))


def test_a_reading_that_differs_in_context_still_matches() -> None:
    """espeak runs "of the" together and stresses a word differently alone: letters still match."""
    spoken = sounds(
        ("ʌ", 0.0, 0.1), ("v", 0.1, 0.2), ("ð", 0.2, 0.3), ("ə", 0.3, 0.4), ("ˈ", 0.4, 0.45), ("k", 0.45, 0.6)
    )
    readings = {"of": "ˈʌv", "the": "ðˈiː", "cat": "kˈæt"}
    words = place_words("of the cat", spoken, readings.__getitem__)
    assert [w.word for w in words] == ["of", "the", "cat"]
    assert (words[0].start, words[0].end) == (0.0, 0.2)
    assert words[1].start == 0.2 and words[1].end == pytest.approx(0.4)
    assert words[2].start == 0.45 and words[2].end == 0.6


def test_words_nothing_matched_share_the_gap_between_their_neighbours() -> None:
    spoken = sounds(("a", 0.0, 0.2), (" ", 0.2, 0.25), ("x", 0.25, 0.45), ("y", 0.45, 0.6), (" ", 0.6, 0.65))
    spoken += sounds(("b", 0.65, 0.8))
    words = place_words("a — & b", spoken, lambda word: {"a": "a", "b": "b"}.get(word, ""))
    assert [w.word for w in words] == ["a", "—", "&", "b"]
    assert [(w.start, w.end) for w in words] == pytest.approx(
        [(0.0, 0.2), (0.2, 0.425), (0.425, 0.65), (0.65, 0.8)]
    )


def test_unmatched_sounds_within_a_word_belong_to_it() -> None:
    """ "a" read alone is the letter's name (eɪ); in the sentence it is ɐ: matched to nothing, it
    still takes its sound, and the neighbours keep their own."""
    spoken = sounds(("ɪ", 0.0, 0.1), ("t", 0.1, 0.2), (" ", 0.2, 0.25), ("ɐ", 0.25, 0.3), (" ", 0.3, 0.35))
    spoken += sounds(("k", 0.35, 0.45), ("æ", 0.45, 0.5), ("t", 0.5, 0.6))
    words = place_words("it a cat", spoken, {"it": "ɪt", "a": "eɪ", "cat": "kæt"}.__getitem__)
    assert [(w.start, w.end) for w in words] == pytest.approx([(0.0, 0.2), (0.2, 0.35), (0.35, 0.6)])


def test_heard_words_end_within_the_audio_heard() -> None:
    words = [SpokenWord("one", 0.0, 0.4), SpokenWord("two", 0.5, 0.9), SpokenWord("three", 1.0, 1.5)]
    assert [w.word for w in heard_words(words, 0.95)] == ["one", "two"]
    assert heard_words(words, 0.3) == []
    assert len(heard_words(words, 9.0)) == 3


def audio_with_words(seconds: float = 1.0, rate: int = 1000) -> Audio:
    samples = np.zeros(int(seconds * rate), dtype=np.float32)
    samples[200:800] = 0.5  # speech from 0.2 s to 0.8 s
    return Audio(samples, rate, (SpokenWord("a", 0.2, 0.5), SpokenWord("b", 0.5, 0.8)))


def test_words_move_with_the_audio_through_joins_trims_and_tempo() -> None:
    audio = audio_with_words()
    joined_audio = Audio.join([audio, Audio.silence(0.5, 1000), audio])
    assert [w.start for w in joined_audio.words or ()] == pytest.approx([0.2, 0.5, 1.7, 2.0])
    trimmed = trim_silence(audio, keep_ms=0)
    assert [(w.start, w.end) for w in trimmed.words or ()] == pytest.approx([(0.0, 0.3), (0.3, 0.6)])
    assert fade_edges(audio).words == audio.words
    faster = change_tempo(Audio(np.tile(audio.samples, 8), 1000, audio.words), 2.0)
    assert [w.start for w in faster.words or ()] == pytest.approx([0.1, 0.25])
    assert Audio.join([audio, Audio(np.zeros(10, np.float32), 1000)]).words is None  # one without: unknown


def test_captions_group_words_into_cues() -> None:
    words = [
        SpokenWord(f"w{i}.", i * 0.5, i * 0.5 + 0.4)
        if i % 4 == 3
        else SpokenWord(f"w{i}", i * 0.5, i * 0.5 + 0.4)
        for i in range(8)
    ]
    cues = word_cues(words)
    assert [c.text for c in cues] == ["w0 w1 w2 w3.", "w4 w5 w6 w7."]
    assert (cues[1].start, cues[1].end) == (2.0, 3.9)
    srt = captions(words, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,900\nw0 w1 w2 w3.\n")
    vtt = captions(words, "vtt")
    assert vtt.startswith("WEBVTT\n") and "00:00:02.000 --> 00:00:03.900\nw4 w5 w6 w7." in vtt
    long = [SpokenWord("word", i * 0.3, i * 0.3 + 0.2) for i in range(30)]
    assert all(len(c.text) <= 42 and c.end - c.start <= 5.0 for c in word_cues(long))
