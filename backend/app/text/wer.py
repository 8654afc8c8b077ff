"""Word and character error rates: how far a transcript is from the words meant, for speech round
trips (the tests, the benchmarks and `scripts.gpu_check`) that must not demand exact text. Words
for Latin script; characters for Chinese (Traditional and Simplified count as the same).

Both sides are normalised before they are compared: case and punctuation are dropped, and numbers
are read out (`7` is `seven`, `25` is `二十五`), because Whisper writes a spoken number as digits or
as words from one rendering to the next, and that choice is not an error."""

from __future__ import annotations

import re

from backend.app.text.chinese import HAN, to_simplified

# fmt: off
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
# fmt: on
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth"}
_ORDINALS |= {"nine": "ninth", "twelve": "twelfth"}
# A number as a transcript writes it: 1,250 / 3.5 / 21st / 7:30 (":00" is the hour alone).
_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?::00\b)?")
_WORD = re.compile(r"[a-z0-9']+")


def _english(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return _english(head) + [name] + (_english(rest) if rest else [])
    raise AssertionError(n)  # pragma: no cover - every n >= 100 has a scale


def _english_number(match: re.Match[str]) -> str:
    whole, fraction, ordinal = match.group(1), match.group(2), match.group(3)
    spoken = _english(int(whole.replace(",", "")))
    if fraction:
        spoken += ["point", *(_ONES[int(d)] for d in fraction)]
    elif ordinal:
        last = spoken[-1]
        spoken[-1] = _ORDINALS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return f" {' '.join(spoken)} "


def spell_numbers(text: str) -> str:
    """`text` in lower case with its numbers written out in words, as a voice reads them."""
    return _NUMBER.sub(_english_number, text.lower())


def words(text: str) -> list[str]:
    """The lower-case words of `text`, numbers in digits written out (`21st` -> `twenty first`)."""
    return _WORD.findall(_NUMBER.sub(_english_number, text.lower()))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    return _distance(words(reference), words(hypothesis))


_DIGITS = "零一二三四五六七八九"
_CHINESE_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?(%)?")


def _chinese_below_10000(n: int) -> str:
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit, n = divmod(n, value)
        if digit:
            out += ("零" if zero and out else "") + _DIGITS[digit] + unit
            zero = False
        else:
            zero = True
    return out


def _chinese(n: int) -> str:
    if n == 0:
        return "零"
    out = ""
    for value, unit in ((100_000_000, "亿"), (10_000, "万"), (1, "")):
        group, n = divmod(n, value)
        if group:
            out += ("零" if out and group < 1000 else "") + _chinese_below_10000(group) + unit
    # 10-19 are read 十, 十一 ... (not 一十一).
    return out[1:] if out.startswith("一十") else out


def _chinese_number(match: re.Match[str]) -> str:
    whole, fraction, percent = match.groups()
    after = match.string[match.end() : match.end() + 1]
    if (whole.startswith("0") and len(whole) > 1) or len(whole) > 12 or (len(whole) == 4 and after == "年"):
        spoken = "".join(_DIGITS[int(d)] for d in whole)  # codes and years, digit by digit
    else:
        spoken = _chinese(int(whole))
    if fraction:
        spoken += "点" + "".join(_DIGITS[int(d)] for d in fraction)
    return "百分之" + spoken if percent else spoken


def han_characters(text: str) -> list[str]:
    """The Chinese characters of `text`, in Simplified form (punctuation, spaces, Latin dropped)."""
    return HAN.findall(to_simplified(text))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over Chinese characters, divided by the reference length. Numbers in
    digits count as read out (`25个` is `二十五个`), and 两 as 二 (`2个` is what `两个` sounds like)."""
    return _distance(_spoken_characters(reference), _spoken_characters(hypothesis))


def _spoken_characters(text: str) -> list[str]:
    read = _CHINESE_NUMBER.sub(_chinese_number, text)
    return [ch if ch != "两" else "二" for ch in han_characters(read)]


def _distance(ref: list[str], hyp: list[str]) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)
