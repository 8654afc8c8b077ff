"""The embedded English voices side by side: hibari's af_heart (the default) and Piper's joe-medium.

Per voice, over sentences no test or other bench speaks (everyday replies, numbers, names, a
question, a long sentence): the real-time factor of synthesis on this CPU (time / audio seconds,
median and p90), and the round-trip word error rate heard by two recognisers, Whisper tiny.en and
the multilingual Whisper base (pooled over all sentences: errors / words). Each sentence is spoken
by both voices in turn, so both meet the same machine state.
"""

from __future__ import annotations

import time
from typing import Any

from backend.app.audio.decode import resample
from backend.app.backends import hibari, piper
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.config import Settings
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate, words
from bench import machine
from bench.common import median, percentile, table

SENTENCES = (
    "Sure, I have set a reminder for your dentist appointment on Thursday afternoon.",
    "The train to Edinburgh leaves from platform four at half past nine.",
    "It should be sunny this morning, with a little rain later in the evening.",
    "A kilometre is about six tenths of a mile.",
    "Would you like me to read the recipe again, step by step?",
    "Your package was delivered yesterday and left with a neighbour.",
    "The museum opens at ten and closes at five on weekdays.",
    "I could not find a restaurant nearby that is still open tonight.",
    "Margaret Atwood wrote The Handmaid's Tale, published in nineteen eighty five.",
    "Drink plenty of water, rest, and call your doctor if the fever gets worse.",
    "There are three meetings on your calendar tomorrow, the first one at eight thirty.",
    "Photosynthesis is how plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
)


def measure(settings: Settings) -> dict[str, Any]:
    voices = {
        "hibari af_heart (default)": hibari.HibariBackend(),
        "Piper joe-medium": piper.PiperBackend("joe", "cpu"),
    }
    ears = {
        "tiny.en": WhisperBackend("embedded", settings.storage.models_dir, beam_size=5),
        "base": WhisperBackend("base-multilingual", settings.storage.models_dir, beam_size=5),
    }
    for engine in voices.values():  # warm up
        engine.synthesize(SynthesisRequest("Ready."))
    rtf: dict[str, list[float]] = {name: [] for name in voices}
    errors = {(name, ear): [0.0, 0.0] for name in voices for ear in ears}
    for text in SENTENCES:
        for name, engine in voices.items():
            started = time.perf_counter()
            audio = engine.synthesize(SynthesisRequest(text))
            rtf[name].append((time.perf_counter() - started) / audio.duration)
            samples = resample(audio, 16_000)
            for ear, whisper in ears.items():
                heard = whisper.transcribe(samples, TranscribeOptions(language="en")).text
                count = len(words(text))
                errors[name, ear][0] += word_error_rate(text, heard) * count
                errors[name, ear][1] += count
    return {"rtf": rtf, "errors": errors, "ears": list(ears)}


def section(result: dict[str, Any]) -> list[str]:
    ears = result["ears"]
    rows = []
    for name, times in result["rtf"].items():
        wers = [result["errors"][name, ear][0] / result["errors"][name, ear][1] for ear in ears]
        rows.append(
            [name, f"{median(times):.3f}", f"{percentile(times, 90):.3f}", *(f"{w:.3f}" for w in wers)]
        )
    headers = ["voice", "RTF median", "RTF p90", *(f"WER ({ear})" for ear in ears)]
    return [
        "# The embedded English voices",
        "",
        f"{machine.summary()}. {len(SENTENCES)} sentences, each spoken by both voices in turn; "
        "RTF = synthesis time / audio seconds (lower is faster); WER pooled over all sentences, "
        "heard by Whisper (beam 5, language en).",
        "",
        *table(headers, rows),
        "",
    ]
