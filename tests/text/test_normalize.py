from __future__ import annotations

from backend.app.text.normalize import clean_for_speech, has_speakable_content


def test_markdown_and_emoji_are_removed() -> None:
    text = "## Title\n**Bold** and *italic* with `code` 🎉 and a [link](http://x.y)."
    assert clean_for_speech(text) == "Title\nBold and italic with code and a link."


def test_underscore_emphasis_is_removed_but_snake_case_kept() -> None:
    assert clean_for_speech("_really_ use my_var and __init__") == "really use my_var and init"


def test_list_markers_are_removed() -> None:
    assert clean_for_speech("- first\n* second\n+ third") == "first\nsecond\nthird"


def test_chinese_is_kept() -> None:
    assert clean_for_speech("你好，世界！😀") == "你好，世界！"


def test_controls_are_removed_and_spaces_collapsed() -> None:
    assert clean_for_speech("a\x00b\u200b   c\t\td") == "ab c d"


def test_speakable_content() -> None:
    assert has_speakable_content("你好")
    assert has_speakable_content("42")
    assert not has_speakable_content("...!!! 🎉")
    assert not has_speakable_content("")
