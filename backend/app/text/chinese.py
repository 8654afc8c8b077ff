"""Chinese text: Traditional to Simplified (OpenCC's tables, pure Python), for engines and
comparisons that work in one script. Both scripts are accepted everywhere."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
"""One Chinese character (the CJK Unified Ideographs, Extension A and the compatibility block)."""


@lru_cache(maxsize=1)
def _converter() -> Any:
    from opencc import OpenCC

    return OpenCC("t2s")


def to_simplified(text: str) -> str:
    """`text` with Traditional characters replaced by their Simplified forms (phrase-aware)."""
    return str(_converter().convert(text))


_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_WORD = re.compile(r"[^\W\d_\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
"""A word of an alphabetic script (Latin, Cyrillic, Greek, ...)."""
CHARACTERS_PER_WORD = 1.5
"""A Chinese word is one to two characters."""


def script_language(text: str) -> str | None:
    """The language `text`'s script gives away, for the scripts of one language each: `zh` (Han
    characters and no kana), `ja` (kana), `ko` (Hangul); None for anything else (Latin, Cyrillic,
    ... are read by many languages, and a voice is trusted with them).

    Mixed text goes by its words: East Asian ones must be the majority, so `我用iPhone拍照` is
    Chinese and `We met in 北京` is not."""
    han = len(HAN.findall(text))
    kana = len(_KANA.findall(text))
    hangul = len(_HANGUL.findall(text))
    east = (han + kana + hangul) / CHARACTERS_PER_WORD
    if not east or east <= len(_WORD.findall(text)):
        return None
    if kana:
        return "ja"
    return "ko" if hangul > han else "zh"
