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
