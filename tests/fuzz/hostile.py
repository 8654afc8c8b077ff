"""What the socket fuzz stages draw from their seeded RNGs: JSON nested 1,200-5,000 deep, 5,001-digit
integers, PCM16 that is silence, faint noise or loud noise, and, for the valid requests between the
hostile ones, the recorded sentence."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import numpy as np

from backend.app.audio.decode import decode_audio
from tests.api.test_realtime import pcm16
from tests.conftest import DATA

BIG = "<a 5,001-digit integer>"
"""Put where a number goes in an event given to `huge`."""


def huge(event: dict[str, Any]) -> str:
    """`event` as JSON, with BIG written as a 5,001-digit integer literal (json.dumps cannot write
    one: Python refuses to convert an integer of more than 4,300 digits)."""
    return json.dumps(event).replace(json.dumps(BIG), "9" * 5_001)


def nested(rng: random.Random) -> str:
    """A JSON value nested 1,200-5,000 deep, in arrays or in objects."""
    depth = rng.randint(1_200, 5_000)
    opener, closer = rng.choice([("[", "]"), ('{"a": ', "}")])
    return opener * depth + "1" + closer * depth


def pcm(rng: random.Random, rate: int, seconds: float, channels: int = 1) -> bytes:
    """Little-endian PCM16: silence, faint noise or loud noise (which a VAD may take for speech)."""
    count = int(rate * seconds) * channels
    noise = np.random.default_rng(rng.randint(0, 2**32)).normal(0, rng.choice([0.0, 0.01, 0.3]), count)
    return (np.clip(noise, -1, 1) * 32767).astype("<i2").tobytes()


@functools.cache
def speech_at(rate: int) -> bytes:
    """The recorded sentence (tests/data/speech.wav, 3 s) as mono PCM16 at `rate`."""
    return pcm16(decode_audio((DATA / "speech.wav").read_bytes(), rate).samples)
