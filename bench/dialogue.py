"""Dialogue scripts: time to the first audio and the real-time factor, script against plain text.

Three different two-speaker scripts of 1,250-1,500 characters are spoken by the TTS service
in-process on the configured engine (the embedded Piper voice here; VibeVoice with `--gpu`), each
speaker mapped to its own library voice. In the same run, interleaved, the same words are spoken as
one plain text (no labels), so the cost of speaking a script (per-turn pieces, or VibeVoice's
multi-speaker windows) is a ratio measured side by side.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from backend.app.core.config import Settings
from bench import machine
from bench.common import median, table

SCRIPTS = {
    "podcast": [
        ("Host", "Welcome back to the show. Today we are talking about how cities can grow food."),
        ("Guest", "Thanks for having me. It is a topic I have been working on for almost ten years."),
        ("Host", "Let us start with the basics. What does urban farming actually look like?"),
        (
            "Guest",
            "It ranges from rooftop gardens on apartment blocks to large warehouses with stacked "
            "shelves of lettuce under lights, watered by machines and watched by sensors.",
        ),
        ("Host", "And is that food expensive compared with what you find in a supermarket?"),
        (
            "Guest",
            "Some of it is, for now. Energy is the main cost indoors, but prices have been "
            "falling, and rooftop gardens cost very little once they are built.",
        ),
        ("Host", "What surprised you most when you started visiting these farms?"),
        (
            "Guest",
            "How many people wanted to help. Neighbours show up on weekends to plant and harvest, "
            "and schools bring children to see where their vegetables come from.",
        ),
        ("Host", "That sounds like more than a food project. It is almost a community centre."),
        ("Guest", "Exactly. The food matters, but the friendships that grow around it matter too."),
        ("Host", "What about the winter? Surely nothing grows on a roof in January."),
        (
            "Guest",
            "Less grows, that is true. Some farms use simple greenhouses on the roof, and others switch to "
            "mushrooms and sprouts, which need little light and can be grown in a basement.",
        ),
        ("Host", "If a listener wants to start at home, what is the easiest first step?"),
        ("Guest", "A few pots of herbs on a sunny window sill. Basil and mint forgive almost every mistake."),
        ("Host", "Thank you so much for joining us today. Where can listeners learn more?"),
        ("Guest", "Most cities have a community garden network, and a local library is a good start."),
    ],
    "interview": [
        ("Reporter", "You climbed the north face last spring. What made you choose that route?"),
        (
            "Climber",
            "It had been on my mind for years. The rock is steep but solid, and the views are "
            "unlike anything else in the range.",
        ),
        ("Reporter", "How long did the climb take from the base camp to the summit?"),
        ("Climber", "Three days up and one day down. We slept on a narrow ledge on the second night."),
        ("Reporter", "Were you ever afraid that you would have to turn back?"),
        (
            "Climber",
            "Once, when a storm came in faster than the forecast said. We waited for six hours "
            "under a rock while the snow fell, and then the sky cleared at sunset.",
        ),
        ("Reporter", "What did you eat up there for four days?"),
        ("Climber", "Mostly dried fruit, nuts and soup. Cooking on a ledge is slow, so simple is best."),
        ("Reporter", "What would you tell someone who wants to try their first big mountain?"),
        (
            "Climber",
            "Start small, climb with people you trust, and learn to turn around without regret. "
            "The mountain will still be there next year.",
        ),
        ("Reporter", "How do you train for a climb like that when you live in a flat city?"),
        (
            "Climber",
            "Stairs, mostly. I carried a heavy pack up the stairs of a tall office building every morning "
            "before work, and I spent my weekends on the small cliffs outside the city.",
        ),
        ("Reporter", "And what is next for you? Another mountain, or a rest?"),
        (
            "Climber",
            "A rest first. Then, perhaps, a long walk across the high plateau with my brother, without any "
            "summit at all, just to enjoy the quiet.",
        ),
        ("Reporter", "Thank you for your time, and congratulations again."),
    ],
    "lesson": [
        ("Teacher", "Today we will learn why the moon seems to change its shape during the month."),
        ("Student", "Is it because the shadow of the earth falls on it?"),
        (
            "Teacher",
            "That is a common idea, but no. The shadow of the earth only matters during an "
            "eclipse. The phases come from where the sun lights the moon.",
        ),
        ("Student", "So half of the moon is always lit, but we do not always see that half?"),
        (
            "Teacher",
            "Exactly right. When the moon is between us and the sun, the lit half faces away, "
            "and we call that a new moon.",
        ),
        ("Student", "And when the earth is between the sun and the moon, we see the whole lit side."),
        ("Teacher", "Yes, that is the full moon. Between the two, we see a growing or shrinking part."),
        ("Student", "How long does it take to go from one full moon to the next?"),
        ("Teacher", "About twenty nine and a half days, which is where the idea of a month comes from."),
        ("Student", "Can we watch it tonight and draw what we see each evening this week?"),
        ("Teacher", "That is a wonderful plan. Bring a notebook and note the time of every drawing."),
        ("Student", "Will the moon rise at the same time every evening while we watch it?"),
        (
            "Teacher",
            "No, it rises about fifty minutes later each day. By the end of the week you will be drawing it "
            "much later in the evening, so plan your time well.",
        ),
        ("Student", "Then I will start tonight and ask my parents to help me with the late ones."),
        ("Teacher", "Good. And next week we will compare everyone's drawings together in class."),
    ],
}


def _service(settings: Settings) -> Any:
    from backend.app.backends import registry
    from backend.app.core.worker import ModelWorker
    from backend.app.services.tts import TTSService
    from backend.app.voices.cache import SpeakerCache
    from backend.app.voices.library import VoiceLibrary

    backend = registry.load_tts(settings)
    library = VoiceLibrary(settings.voices.dir, settings.voices.default)
    return TTSService(backend, ModelWorker("tts", 2), library, SpeakerCache(16), settings.tts)


async def _timed(stream: Any) -> tuple[float, float, float]:
    """(ms to the first audio, ms in all, seconds of audio) of a speech stream opened just now."""
    started = time.perf_counter()
    first, seconds = 0.0, 0.0
    async for chunk in stream.audio():
        if not seconds:
            first = (time.perf_counter() - started) * 1000
        seconds += chunk.duration
    return first, (time.perf_counter() - started) * 1000, seconds


async def _once(open_speech: Any) -> tuple[float, float, float]:
    """Open a speech stream and run it: (ms to the first audio, ms in all, seconds of audio),
    the time to open it (the checks, the queue) included."""
    began = time.perf_counter()
    stream = await open_speech()
    first, total, seconds = await _timed(stream)
    opened = (time.perf_counter() - began) * 1000 - total
    return first + opened, total + opened, seconds


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    from backend.app.text.script import script_of

    service = _service(settings)
    voices = [v.file for v in service.voices.voices()]
    rows = []
    for name, turns in SCRIPTS.items():
        script = script_of(turns)
        labels = list(dict.fromkeys(label for label, _ in turns))
        mapping = {label: voices[i % len(voices)] for i, label in enumerate(labels)} if voices else {}
        plain = " ".join(text for _, text in turns)
        runs: dict[str, list[tuple[float, float, float]]] = {"script": [], "plain": []}
        speak = {
            "script": lambda: service.speak_script(script, mapping),  # noqa: B023 (called at once)
            "plain": lambda: service.speak(plain, voice=mapping.get(labels[0])),  # noqa: B023
        }
        asyncio.run(_once(speak["script"]))  # warm-up: voices prepared, caches filled
        for _ in range(repeats):
            for kind in ("script", "plain"):
                runs[kind].append(asyncio.run(_once(speak[kind])))
        script_first = median([r[0] for r in runs["script"]])
        plain_first = median([r[0] for r in runs["plain"]])
        script_total = median([r[1] for r in runs["script"]])
        plain_total = median([r[1] for r in runs["plain"]])
        seconds = median([r[2] for r in runs["script"]])
        rows.append(
            {
                "script": name,
                "chars": script.chars,
                "turns": len(script.turns),
                "first_ms": script_first,
                "plain_first_ms": plain_first,
                "total_ms": script_total,
                "plain_total_ms": plain_total,
                "audio_s": seconds,
                "rtf": script_total / 1000 / seconds if seconds else float("nan"),
            }
        )
    service.worker.shutdown()
    return {"rows": rows, "engine": service.backend.info.model, "native": service.dialogue_speakers > 0}


def section(result: dict[str, Any], repeats: int) -> list[str]:
    rows = result["rows"]
    how = (
        "VibeVoice windows of whole turns, all of a window's speakers in one generation"
        if result["native"]
        else "turn by turn, each turn in its speaker's voice"
    )
    lines = [
        "## Dialogue scripts",
        "",
        f"Three two-speaker scripts (1,250-1,500 characters) spoken by the TTS service in-process on "
        f"{result['engine']} ({how}), and the same words as one plain text, interleaved, median of "
        f"{repeats} run(s) each; {machine.summary()}.",
        "",
    ]
    lines += table(
        [
            "script",
            "characters",
            "turns",
            "first audio (ms)",
            "plain text first audio (ms)",
            "whole script (ms)",
            "plain text whole (ms)",
            "script / plain",
            "audio (s)",
            "real-time factor",
        ],
        [
            [
                r["script"],
                r["chars"],
                r["turns"],
                f"{r['first_ms']:.0f}",
                f"{r['plain_first_ms']:.0f}",
                f"{r['total_ms']:.0f}",
                f"{r['plain_total_ms']:.0f}",
                f"{r['total_ms'] / r['plain_total_ms']:.2f}",
                f"{r['audio_s']:.1f}",
                f"{r['rtf']:.3f}",
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "The first audio of a script is its first turn (or window); a plain text's is its first "
        "segment. The real-time factor is synthesis time over audio length (below 1: faster than "
        "it plays).",
    ]
    return lines
