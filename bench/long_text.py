"""Long-text synthesis: time to the first segment vs the whole text, and the real-time factor.

Run with `.venv/bin/python -m bench.long_text` (after `make setup`). A ~2,000-character text is
synthesised by the TTS service on the configured engine (the embedded Piper voice by default), three
ways in one run:
- segmented, as the server does it (SEGMENT_THRESHOLD_CHARS), timing the first segment and the total;
- unsegmented: the raw engine on the whole text in one call, for comparison;
- through the running server's POST /tts (whole response).
Writes bench/results/long_text.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

from backend.app.backends import registry
from backend.app.core.config import Settings
from backend.app.core.values import SynthesisRequest
from backend.app.core.worker import ModelWorker
from backend.app.services.tts import TTSService
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary
from bench.common import free_port, start_server

RESULTS = Path(__file__).resolve().parent / "results"

PARAGRAPH = (
    "The lighthouse stood at the end of a narrow spit of rock, and for nearly two centuries its beam "
    "had swept across the bay every night. Its keepers kept a log of the weather, the passing ships and "
    "the birds that rested on the gallery rail; some entries are only a line long, others fill a page. "
    "In the winter of the great storm, the log says, waves broke over the lantern itself, and the "
    "keeper's family sheltered in the stairwell while he kept the lamp burning. When the light was "
    "finally automated, the last keeper walked down the path with his dog, locked the door behind him, "
    "and handed the key to the harbour master. Today visitors climb the one hundred and twelve steps "
    "to look out over the water, and on clear evenings they can still watch the beam begin to turn. "
)


def long_text(chars: int = 2000) -> str:
    text = ""
    while len(text) < chars:
        text += PARAGRAPH
    cut = text.rfind(". ", 0, chars)
    return text[: cut + 1]


async def speak_segmented(service: TTSService, text: str) -> tuple[float, float, int]:
    """The service's own segmented speech: ms to the first segment, ms in all, samples made."""
    start = time.perf_counter()
    first_ms, samples = 0.0, 0
    speech = await service.speak(text)
    async for chunk in speech.audio():
        if not samples:
            first_ms = (time.perf_counter() - start) * 1000
        samples += len(chunk.samples)
    return first_ms, (time.perf_counter() - start) * 1000, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    text = long_text()
    backend = registry.load_tts(settings)
    service = TTSService(
        backend,
        ModelWorker("tts", 1),
        VoiceLibrary(settings.voices.dir, settings.voices.default),
        SpeakerCache(settings.voices.cache_size),
        settings.tts,
    )
    segments = service.prepare_text(text)
    asyncio.run(speak_segmented(service, "A warm-up sentence."))

    first_ms, total_ms, whole_ms, server_ms = [], [], [], []
    audio_s = 0.0
    port = free_port()
    server = start_server(port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            for _ in range(args.repeats):
                time.sleep(0.3)
                first, total, samples = asyncio.run(speak_segmented(service, text))
                first_ms.append(first)
                total_ms.append(total)
                audio_s = samples / backend.sample_rate
                time.sleep(0.3)
                start = time.perf_counter()
                backend.synthesize(SynthesisRequest(text))
                whole_ms.append((time.perf_counter() - start) * 1000)
                time.sleep(0.3)
                start = time.perf_counter()
                http.post("/tts", json={"text": text}).raise_for_status()
                server_ms.append((time.perf_counter() - start) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
        service.worker.shutdown()

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    def rtf(values: list[float]) -> str:
        return f"{med(values) / 1000 / audio_s:.3f}"

    lines = [
        "# Long-text synthesis",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Engine: {backend.info.model} on "
        f"{backend.info.device}. Text: {len(text)} characters, {len(segments)} segments at "
        f"SEGMENT_THRESHOLD_CHARS={settings.tts.segment_threshold_chars}, {audio_s:.1f} s of speech. "
        f"Median of {args.repeats} runs; written by `bench/long_text.py`.",
        "",
        "| measure | ms | real-time factor |",
        "|---|---|---|",
        f"| first segment ready (segmented, in-process) | {med(first_ms)} | |",
        f"| all segments (segmented, in-process) | {med(total_ms)} | {rtf(total_ms)} |",
        f"| whole text in one engine call (no segmentation) | {med(whole_ms)} | |",
        f"| POST /tts, whole response (server, WAV) | {med(server_ms)} | {rtf(server_ms)} |",
        "",
        f"The first segment is ready after {med(first_ms) / med(total_ms):.1%} of the total time: a "
        "streaming response can start playing that much sooner.",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "long_text.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
