"""Split text into speakable segments, for CJK as well as Latin scripts.

Text is cut at sentence ends first (。！？!?.;； and newlines), then, for sentences still over the
limit, at clause marks (，、：,:), then by a hard split at the limit — at a space for Latin scripts,
so words are not cut unless a single word is longer than the limit, and in Chinese between words
(pypinyin's phrases), never inside a Latin word or number written into it. Short neighbouring sentences are
packed together up to the limit, which keeps the number of synthesis calls low and prosody natural.

Not sentence ends: abbreviations ("Dr.", "e.g."), decimals ("3.5"), dots inside URLs and file
names, and ellipses ("...", "…").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Closing quotes and brackets that stay with the sentence they end.
_CLOSERS = "\"'”’」』）)]》"
_CJK_ENDS = "。！？；"
_LATIN_ENDS = "!?;"
_CLAUSE_MARKS = "，、：,:"
_SENTENCE_MARKS = _CJK_ENDS + _LATIN_ENDS + "."
_TRAILERS = _CLOSERS + _CJK_ENDS + _LATIN_ENDS
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "approx",
        "dept",
        "est",
        "misc",
        "mt",
    ]
)

_CLAUSE_RE = re.compile(f"(?<=[{re.escape(_CLAUSE_MARKS)}])[{re.escape(_CLOSERS)}]*\\s*")
# Words a spoken phrase can begin with: a first piece cut without a clause mark is cut before one.
_PHRASE_STARTS = re.compile(
    r"\s(?=(?:and|but|or|so|because|which|who|that|when|while|where|with|without|for|to|from|of|in|on|"
    r"at|as|if|then|than|about|after|before|until|since|into|over|under|through|along|"
    r"across|around|during|between|against|toward|towards|by)\b)",
    re.IGNORECASE,
)


def _is_sentence_end(text: str, i: int) -> bool:
    """Whether the punctuation mark at `text[i]` ends a sentence."""
    ch = text[i]
    if ch in _CJK_ENDS:
        return True
    nxt = i + 1
    while nxt < len(text) and text[nxt] in _CLOSERS:
        nxt += 1
    followed_by_break = nxt >= len(text) or text[nxt].isspace()
    if ch in _LATIN_ENDS:
        return followed_by_break
    if ch != ".":
        return False
    if not followed_by_break:
        return False  # decimals, URLs, file names, "e.g" inside a word
    if i > 0 and text[i - 1] in ".…":
        return False  # an ellipsis trails off; it does not end the sentence here
    word = re.search(r"([\w.]+)$", text[:i])
    if word:
        token = word.group(1).lower()
        if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
            return False  # "Dr.", "e.g.", initials such as "J."
    return True


def _sentence_ends(text: str) -> Iterator[int]:
    """The index just past each sentence end (its marks and closing quotes) and each newline."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            yield i + 1
        elif ch in _SENTENCE_MARKS and _is_sentence_end(text, i):
            # Take repeated marks ("?!", "！！") and closing quotes with the sentence.
            end = i + 1
            while end < len(text) and text[end] in _TRAILERS:
                end += 1
            yield end
            i = end
            continue
        i += 1


def split_sentences(text: str) -> list[str]:
    """Split at sentence ends and newlines; pieces keep their punctuation, stripped of spaces."""
    sentences: list[str] = []
    start = 0
    for end in _sentence_ends(text):
        sentences.append(text[start:end])
        start = end
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def is_cjk(ch: str) -> bool:
    """Whether `ch` is a Chinese, Japanese or Korean character (written without spaces)."""
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def _joiner(left: str, right: str) -> str:
    """No space between CJK pieces; one space between Latin ones."""
    if left and right and (is_cjk(left[-1]) or is_cjk(right[0])):
        return ""
    return " "


def join_pieces(pieces: list[str]) -> str:
    """Join text pieces the way the script expects: CJK without spaces, Latin with one."""
    joined = ""
    for piece in pieces:
        joined = joined + _joiner(joined, piece) + piece if joined else piece
    return joined


def _hard_split(text: str, max_chars: int) -> Iterator[str]:
    """Cut a run with no usable punctuation, at the last space before the limit when there is one."""
    rest = text.strip()
    while len(rest) > max_chars:
        cut = rest.rfind(" ", 0, max_chars + 1)
        if cut <= 0 or is_cjk(rest[max_chars - 1]):
            cut = _unspaced_cut(rest, max_chars)  # CJK run or one very long word
        yield rest[:cut].strip()
        rest = rest[cut:].strip()
    if rest:
        yield rest


def _unspaced_cut(run: str, limit: int) -> int:
    """Where to cut text written without spaces, at or before `limit`: between words, neither
    inside a Latin word or number embedded in it nor inside a Chinese word (as pypinyin's phrase
    dictionary, the one the Mandarin voice reads with, segments it), going back at most a quarter
    of the limit; at the limit when no such place is near."""
    earliest = max(1, limit - max(4, limit // 4))
    cut = limit
    while cut > earliest and _alnum(run[cut - 1]) and _alnum(run[cut]):
        cut -= 1
    if cut == earliest:
        return limit
    if not (is_cjk(run[cut - 1]) and is_cjk(run[cut])):
        return cut
    from pypinyin.seg.mmseg import seg

    end, best = 0, 0
    for word in seg.cut(run[: limit + 8]):
        end += len(word)
        if end > cut:
            break
        best = end
    return best if best >= earliest else cut


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _pack(pieces: Iterator[str] | list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive pieces while the result stays within `max_chars`."""
    packed: list[str] = []
    for piece in pieces:
        if packed:
            joined = join_pieces([packed[-1], piece])
            if len(joined) <= max_chars:
                packed[-1] = joined
                continue
        packed.append(piece)
    return packed


def _split_long_sentence(sentence: str, max_chars: int) -> Iterator[str]:
    clauses = [c for c in _CLAUSE_RE.split(sentence) if c.strip()]
    for clause in _pack([c.strip() for c in clauses], max_chars):
        if len(clause) <= max_chars:
            yield clause
        else:
            yield from _hard_split(clause, max_chars)


def segment_text(text: str, max_chars: int) -> list[str]:
    """Split `text` into segments of at most `max_chars` characters.

    Text within the limit is returned whole (stripped). Empty or blank text gives an empty list.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    text = text.strip()
    if not text:
        return []
    if len(text) <= max_chars and "\n" not in text:
        return [text]
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
        else:
            pieces.extend(_split_long_sentence(sentence, max_chars))
    return _pack(pieces, max_chars)


def _weight(text: str) -> int:
    """Length for the minimum-piece rule: a CJK character says about as much as two Latin ones."""
    return len(text) + sum(1 for ch in text if is_cjk(ch))


class SentenceChunker:
    """Turns a stream of text deltas (an LLM reply) into pieces to speak, as early as is safe.

    A piece is handed out once its sentence is certainly complete: a Latin "." "!" "?" counts only
    when something follows it ("3." may become "3.5"), a CJK end mark or a newline at once. Pieces
    shorter than `min_chars` wait for the next sentence, so "Hi." is not a synthesis call of its
    own. Text that runs past `max_chars` without a sentence end is cut at its last clause mark or
    space, so a run-on reply cannot hold back the audio.

    The first piece is what the listener waits for, so it comes sooner: it may be cut at a clause
    mark once it has `first_clause_chars`, and a first sentence still running at `first_max_chars`
    with no clause mark is cut at a word boundary, before a word a phrase begins with ("and",
    "which", "with", ...) when there is one, so that the first audio never waits for a long first
    sentence to be complete.
    """

    def __init__(
        self,
        min_chars: int = 12,
        max_chars: int = 150,
        first_clause_chars: int = 40,
        first_max_chars: int = 60,
    ) -> None:
        if not 0 < min_chars <= max_chars:
            raise ValueError("need 0 < min_chars <= max_chars")
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self.first_max_chars = min(first_max_chars, max_chars)
        self._buffer = ""
        self._pending: list[str] = []  # complete sentences waiting to reach min_chars
        self._emitted = 0

    def _take(self, pieces: list[str]) -> list[str]:
        """Add complete sentences; return those ready (merged up to min_chars)."""
        ready: list[str] = []
        for piece in pieces:
            self._pending.append(piece)
            if _weight(join_pieces(self._pending)) >= self.min_chars:
                ready.append(join_pieces(self._pending))
                self._pending = []
        self._emitted += len(ready)
        return ready

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the pieces now complete (often none)."""
        self._buffer += delta
        certain = 0
        for end in _sentence_ends(self._buffer):
            mark = self._buffer[end - 1]
            if end < len(self._buffer) or mark == "\n" or mark in _CJK_ENDS or is_cjk(mark):
                certain = end
        pieces = split_sentences(self._buffer[:certain])
        self._buffer = self._buffer[certain:]
        ready = self._take(pieces)
        ready += self._cut_long_run()
        return ready

    def _cut_long_run(self) -> list[str]:
        """Cut an unfinished sentence that is too long to wait for, at a clause mark or a space."""
        limit = self.first_clause_chars if self._emitted == 0 else self.max_chars
        text = self._buffer
        if len(text.strip()) < limit:
            return []
        # The last clause mark that leaves a piece long enough to stand alone.
        cut = 0
        for match in _CLAUSE_RE.finditer(text):
            if 0 < match.end() < len(text) and _weight(text[: match.end()].strip()) >= self.min_chars:
                cut = match.end()
        if not cut and self._emitted == 0 and not self._pending and _weight(text) >= self.first_max_chars:
            cut = self._phrase_cut(text)
        if not cut and len(text) >= self.max_chars:
            space = text.rfind(" ", 0, len(text) - 1)
            cut = space if space > 0 else len(text)
        if not cut:
            return []
        piece, self._buffer = text[:cut].strip(), text[cut:]
        return self._take([piece]) if piece else []

    def _phrase_cut(self, text: str) -> int:
        """Where to cut a long first sentence that has no clause mark: before the last phrase-starting
        word in its second half, else at its last space (the word after it may still be growing);
        0 when there is no space (CJK text waits for a clause mark or `max_chars`)."""
        last_space = text.rfind(" ", 0, len(text) - 1)
        starts = [m.start() for m in _PHRASE_STARTS.finditer(text, 0, last_space + 1)]
        good = [at for at in starts if _weight(text[:at].strip()) >= max(self.min_chars, len(text) // 2)]
        if good:
            return good[-1]
        return last_space if _weight(text[: max(last_space, 0)].strip()) >= self.min_chars else 0

    def flush(self) -> list[str]:
        """The end of the stream: whatever is left, as one last piece (or none)."""
        rest = split_sentences(self._buffer)
        self._buffer = ""
        tail = join_pieces([*self._pending, *rest])
        self._pending = []
        return [tail] if tail else []
