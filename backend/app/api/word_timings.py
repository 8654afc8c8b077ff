"""Word timings in responses: each piece's words placed on the whole speech's clock.

Routes that stream speech piece by piece (`/tts` and `/v1/audio/speech` events, `/conversation`'s
`audio` events, the realtime WebSocket's `audio_words`) give each piece's words with times in
seconds from the start of the whole speech, so a client can caption or highlight without adding
anything up; the piece's own `start` is given too.
"""

from __future__ import annotations

import base64

from backend.app.audio.types import Audio, SpokenWord


def words_json(
    words: tuple[SpokenWord, ...] | list[SpokenWord] | None, offset: float = 0.0
) -> list[dict[str, object]]:
    """`[{word, start, end}]`, moved by `offset` seconds, to the millisecond ([] when unknown)."""
    return [
        {"word": w.word, "start": round(w.start + offset, 3), "end": round(w.end + offset, 3)}
        for w in words or ()
    ]


class Timeline:
    """Where each piece of one speech starts: the pieces' durations added up as they go."""

    def __init__(self) -> None:
        self.offset = 0.0

    def place(self, audio: Audio) -> tuple[float, list[dict[str, object]]]:
        """The piece's start, and its words on the speech's clock; the clock moves past it."""
        start = self.offset
        self.offset += audio.duration
        return round(start, 3), words_json(audio.words, start)


def timed_fields(data: bytes, audio: Audio) -> dict[str, object]:
    """What every JSON answer with the audio and its words has: the encoded audio as base64, its
    rate and length, and `words` (the routes add the format they name, and captions)."""
    return {
        "audio": base64.b64encode(data).decode("ascii"),
        "sample_rate": audio.sample_rate,
        "duration": round(audio.duration, 3),
        "words": words_json(audio.words),
    }
