"""Transcript segments, or the words of synthesised speech, as subtitles: SubRip (.srt) and
WebVTT (.vtt)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from backend.app.audio.types import SpokenWord
from backend.app.core.values import TranscriptSegment
from backend.app.text.word_timing import joined


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Iterable[TranscriptSegment]) -> list[TranscriptSegment]:
    return [s for s in segments if s.text.strip()]


def to_srt(segments: Iterable[TranscriptSegment]) -> str:
    """Numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, separated by blank lines."""
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[TranscriptSegment]) -> str:
    """A WEBVTT header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in _cues(segments)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


CUE_CHARS = 42
"""The longest caption line (the usual broadcast limit)."""
CUE_SECONDS = 5.0
_CUE_ENDS = (".", "!", "?", "。", "！", "？", ";", "；")


def word_cues(words: Sequence[SpokenWord]) -> list[TranscriptSegment]:
    """Spoken words grouped into caption cues: a cue ends after a sentence, before it would pass
    42 characters or 5 seconds, and runs from its first word's start to its last word's end."""
    cues: list[TranscriptSegment] = []
    current: list[SpokenWord] = []

    def close() -> None:
        if current:
            text = joined([w.word for w in current])
            cues.append(TranscriptSegment(current[0].start, current[-1].end, text))
            current.clear()

    for word in words:
        if current:
            longer = len(joined([*(w.word for w in current), word.word])) > CUE_CHARS
            if longer or word.end - current[0].start > CUE_SECONDS:
                close()
        current.append(word)
        if word.word.endswith(_CUE_ENDS):
            close()
    close()
    return cues


def captions(words: Sequence[SpokenWord], kind: str) -> str:
    """Captions for synthesised speech: `srt` or `vtt`."""
    cues = word_cues(words)
    return to_srt(cues) if kind == "srt" else to_vtt(cues)
