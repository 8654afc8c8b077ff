"""Helpers for the streamed routes: read a text/event-stream body into (event, data) pairs, as a
browser's EventSource would; the timing keys of a turn."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

TURN_TIMINGS = {
    "stt_ms",
    "llm_first_token_ms",
    "llm_ms",
    "tts_first_audio_ms",
    "tts_ms",
    "first_audio_ms",
    "total_ms",
}
"""The timings of a spoken turn, streamed or not."""


def parse_sse(lines: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    for line in lines:
        if not line:
            if data:
                events.append((name, json.loads(data)))
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
    if data:
        events.append((name, json.loads(data)))
    return events
