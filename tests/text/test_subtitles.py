from __future__ import annotations

from backend.app.core.values import TranscriptSegment
from backend.app.text.subtitles import to_srt, to_vtt

SEGMENTS = (
    TranscriptSegment(0.0, 2.5, "Hello there."),
    TranscriptSegment(2.5, 2.9, "  "),  # nothing to show: no cue
    TranscriptSegment(3661.2345, 3662.0, " 你好，世界。 "),
)


def test_srt_numbers_cues_with_comma_milliseconds() -> None:
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,234 --> 01:01:02,000\n你好，世界。\n"
    )


def test_vtt_has_a_header_and_dot_milliseconds() -> None:
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.234 --> 01:01:02.000\n你好，世界。\n"
    )


def test_no_segments() -> None:
    assert to_srt(()) == "" and to_vtt(()) == "WEBVTT\n"
