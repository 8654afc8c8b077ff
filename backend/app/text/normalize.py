"""Make model output speakable: drop markdown marks, emoji and stray symbols, keep the words."""

from __future__ import annotations

import re
import unicodedata

_MARKDOWN = re.compile(r"(\*\*|__|\*|`{1,3}|^#{1,6}\s*|^\s*[-*+]\s+|^\s*>\s*)", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
# _emphasis_ (not snake_case words: the underscores must sit at word edges)
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)_(\S(?:[^_]*\S)?)_(?!\w)")
_SPACES = re.compile(r"[ \t\f\v]+")


def _speakable(ch: str) -> bool:
    category = unicodedata.category(ch)
    # So: emoji and pictographs; Cs/Co/Cn: surrogates, private use, unassigned; Cc/Cf: controls
    # except newline and tab.
    if ch in "\n\t":
        return True
    return category not in {"So", "Cs", "Co", "Cn", "Cc", "Cf", "Sk"}


def clean_for_speech(text: str) -> str:
    """Return `text` without markdown, emoji and control characters, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _LINK.sub(r"\1", text)
    text = _MARKDOWN.sub("", text)
    text = _UNDERSCORE_EMPHASIS.sub(r"\1", text)
    text = "".join(ch for ch in text if _speakable(ch))
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def has_speakable_content(text: str) -> bool:
    """True when `text` has at least one letter or digit (any script)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)
