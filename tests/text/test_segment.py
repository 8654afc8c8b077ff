from __future__ import annotations

import re

import pytest

from backend.app.text.segment import SentenceChunker, join_pieces, segment_text, split_sentences


def test_short_text_is_one_segment() -> None:
    assert segment_text("  Hello there.  ", 150) == ["Hello there."]


def test_blank_text_has_no_segments() -> None:
    assert segment_text("   \n ", 150) == []


def test_english_splits_at_sentence_ends_and_packs_within_limit() -> None:
    text = "The first sentence is here. The second one follows! Is this the third? Yes; the fourth."
    segments = segment_text(text, 40)
    assert all(len(s) <= 40 for s in segments)
    assert " ".join(segments) == text
    assert segments[0] == "The first sentence is here."


def test_chinese_splits_at_full_width_marks_without_spaces() -> None:
    text = "今天天气很好。我们去公园散步吧！你觉得怎么样？好的，我同意。" * 3
    segments = segment_text(text, 30)
    assert all(len(s) <= 30 for s in segments)
    assert "".join(segments) == text
    assert all(s[-1] in "。！？" for s in segments)


def test_mixed_chinese_and_english() -> None:
    text = "我今天用 Python 写了一个程序。It works very well! 然后我们测试了 API 的性能。" * 2
    segments = segment_text(text, 40)
    assert all(len(s) <= 40 for s in segments)
    assert join_pieces(segments).replace(" ", "") == text.replace(" ", "")


def test_clause_marks_split_long_sentences() -> None:
    text = (
        "When the rain stops, and the wind calms down, we will walk to the harbour, "
        "buy some fish, and cook dinner"
    )
    segments = segment_text(text, 40)
    assert all(len(s) <= 40 for s in segments)
    assert segments[0].endswith(",")


def test_chinese_clause_marks() -> None:
    text = "虽然今天下雨了，但是我们还是去了博物馆，看了很多展览，学到了不少东西，大家都很开心"
    segments = segment_text(text, 20)
    assert all(len(s) <= 20 for s in segments)
    assert "".join(segments) == text


def test_no_punctuation_is_hard_split_between_words() -> None:
    text = " ".join(["word"] * 100)
    segments = segment_text(text, 50)
    assert all(len(s) <= 50 for s in segments)
    assert all(set(s.split()) == {"word"} for s in segments)  # no word was cut
    assert sum(len(s.split()) for s in segments) == 100


def test_cjk_without_punctuation_is_cut_at_the_limit() -> None:
    text = "字" * 95
    segments = segment_text(text, 30)
    assert [len(s) for s in segments] == [30, 30, 30, 5]


def test_chinese_semicolons_and_enumeration_commas_are_cut_points() -> None:
    """；ends a sentence; ，、： are clause marks a long sentence is cut at, before any hard cut."""
    text = "第一，准备好材料；第二，把苹果、香蕉、橙子、葡萄、西瓜都洗干净；第三，切成小块"
    segments = segment_text(text, 16)
    assert all(len(s) <= 16 for s in segments)
    assert "".join(segments) == text
    assert all(s[-1] in "；，、" for s in segments[:-1]), segments


def test_a_chinese_run_without_punctuation_is_cut_between_words() -> None:
    """Cut where a word ends (pypinyin's phrases: the Mandarin voice reads 北京 as one word), and
    never inside a Latin word or number written into the Chinese."""
    text = "我们明天去北京天安门广场看升旗仪式然后去颐和园划船" * 3
    for limit in (20, 22, 24, 27):
        segments = segment_text(text, limit)
        assert "".join(segments) == text and all(len(s) <= limit for s in segments)
        cuts = {sum(len(s) for s in segments[: i + 1]) for i in range(len(segments) - 1)}
        for word in ("北京", "天安门广场", "颐和园", "划船"):
            for found in re.finditer(word, text):
                assert not cuts & set(range(found.start() + 1, found.end())), (limit, word, segments)
    mixed = "我今天用iPhone15拍了很多照片然后发给了我的朋友们看" * 2
    cut = segment_text(mixed, 24)
    assert "".join(cut) == mixed
    assert all("iPhone15" in s or ("iPhone" not in s and "15" not in s) for s in cut), cut


def test_a_word_longer_than_the_limit_is_cut() -> None:
    segments = segment_text("a " + "x" * 120 + " b", 50)
    assert all(len(s) <= 50 for s in segments)
    assert "".join(segments).replace(" ", "") == "a" + "x" * 120 + "b"


def test_only_punctuation_is_kept_as_text() -> None:
    assert segment_text("...!!!???", 150) == ["...!!!???"]
    assert all(len(s) <= 5 for s in segment_text("。" * 12, 5))


def test_emoji_are_counted_and_not_split_inside() -> None:
    text = "Great news 🎉! " * 20
    segments = segment_text(text, 40)
    assert all(len(s) <= 40 for s in segments)
    assert all(s.count("🎉") == s.count("!") for s in segments)


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith arrived at 3.5 hours past noon.",
        "Visit www.example.com/page.html for details.",
        "Well... I am not sure about that one.",
        "Use tools, e.g. a hammer, for this job.",
        "J. R. R. Tolkien wrote it.",
        "Wait… what happened here?",
    ],
)
def test_not_sentence_ends(text: str) -> None:
    assert split_sentences(text) == [text]


def test_newlines_are_boundaries() -> None:
    assert split_sentences("first line\nsecond line") == ["first line", "second line"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]
    assert split_sentences("他说：“好的。”然后走了。") == ["他说：“好的。”", "然后走了。"]


def test_segments_never_exceed_the_limit_on_long_mixed_input() -> None:
    text = (
        "This is a fairly long English sentence without much punctuation that goes on "
        "这是一个很长的中文句子没有任何标点符号一直写下去直到超过限制为止 "
    ) * 10
    for limit in (20, 37, 150):
        assert all(0 < len(s) <= limit for s in segment_text(text, limit))


def chunk_stream(text: str, **kwargs: int) -> list[str]:
    """Feed `text` word by word (as an LLM streams it) and collect the pieces."""
    chunker = SentenceChunker(**kwargs)
    pieces: list[str] = []
    for delta in re.findall(r"\S+\s*", text):
        pieces += chunker.feed(delta)
    return pieces + chunker.flush()


def test_chunker_hands_out_whole_sentences_and_merges_short_ones() -> None:
    pieces = chunk_stream("Hi. The capital of France is Paris. It is lovely in spring!")
    assert pieces == ["Hi. The capital of France is Paris.", "It is lovely in spring!"]


def test_chunker_waits_until_a_full_stop_is_certain() -> None:
    chunker = SentenceChunker(min_chars=5)
    assert chunker.feed("It costs 3.") == []  # "3." may become "3.5"
    assert chunker.feed("5 euros. Then") == ["It costs 3.5 euros."]
    assert chunker.feed(" Dr.") == [] and chunker.feed(" Smith came.") == []
    assert chunker.flush() == ["Then Dr. Smith came."]


def test_chunker_cjk_ends_are_certain_at_once() -> None:
    chunker = SentenceChunker(min_chars=8)
    assert chunker.feed("你好。") == []  # too short alone (a CJK character weighs two)
    assert chunker.feed("今天天气很好。明天") == ["你好。今天天气很好。"]  # no space needed after 。
    assert chunker.flush() == ["明天"]


def test_chunker_cuts_a_run_on_reply_so_audio_is_not_held_back() -> None:
    run_on = "Well, " + "this goes on and on without a stop " * 8
    pieces = chunk_stream(run_on, max_chars=60, first_clause_chars=40)
    assert len(pieces) > 3 and all(len(p) <= 60 for p in pieces)
    assert " ".join(pieces).split() == run_on.split()  # nothing lost, nothing added


def test_chunker_first_piece_may_end_at_a_clause() -> None:
    text = "Sure thing, turning on the kitchen lights now, and some quiet music too. Enjoy!"
    pieces = chunk_stream(text, first_clause_chars=20)
    assert pieces[0] == "Sure thing, turning on the kitchen lights now,"
    assert " ".join(pieces).split() == text.split()


LONG_FIRST_SENTENCES = (
    "The old lighthouse keeper walked slowly along the rocky shore every single evening to watch "
    "the fishing boats return safely to the harbour before the autumn storms arrived. He slept.",
    "Photosynthesis is the remarkable process by which green plants and many other organisms use "
    "sunlight water and carbon dioxide from the air to make oxygen and chemical energy stored as sugar.",
    "My favourite recipe needs three ripe bananas two cups of flour one egg a spoon of honey and a "
    "pinch of salt mixed together gently and baked for forty minutes in a hot oven. Enjoy it.",
)


@pytest.mark.parametrize("text", LONG_FIRST_SENTENCES)
def test_chunker_a_long_first_sentence_does_not_hold_back_the_first_piece(text: str) -> None:
    """A first sentence of 25-35 words with no clause mark: the first piece is handed out while
    the sentence is still being written, at a word boundary, after a handful of words."""
    first_sentence = text[: text.index(".") + 1]
    assert len(first_sentence.split()) >= 25
    chunker = SentenceChunker()
    written = ""
    first: list[str] = []
    for delta in re.findall(r"\S+\s*", text):
        written += delta
        first = chunker.feed(delta)
        if first:
            break
    assert first, "no piece before the end of the reply"
    assert len(written) < len(first_sentence) * 0.6, f"the first piece waited for {written!r}"
    assert 12 <= len(first[0]) <= 60 and written.startswith(first[0])
    pieces = first + [p for d in re.findall(r"\S+\s*", text[len(written) :]) for p in chunker.feed(d)]
    pieces += chunker.flush()
    assert " ".join(pieces).split() == text.split()
    assert all(len(p.split()) >= 2 for p in pieces)


def test_chunker_cuts_a_long_first_sentence_before_a_phrase() -> None:
    pieces = chunk_stream(LONG_FIRST_SENTENCES[0])
    assert pieces[0] == "The old lighthouse keeper walked slowly"
    assert pieces[1].startswith("along the rocky shore")


def test_chunker_keeps_every_word_of_real_text() -> None:
    text = (
        "Mr. Brown arrived at 9.30 a.m., didn't he? He said: \"It's fine.\" Then he left... "
        "quietly; nobody noticed. Visit example.com/docs for more (it's free)! Done"
    )
    pieces = chunk_stream(text)
    assert " ".join(pieces).split() == text.split()
    assert all(len(p) >= 12 for p in pieces[:-1])


def test_chunker_rejects_a_bad_configuration() -> None:
    with pytest.raises(ValueError):
        SentenceChunker(min_chars=0)
