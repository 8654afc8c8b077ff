"""STT decoding for spoken turns: beam 1 (greedy) against beam 5, on the same clips, same run.

Eight spoken-assistant requests, each spoken by the embedded voice at three speeds and with and
without noise (white noise at 15 dB SNR): 48 clips. Each is transcribed in-process by the embedded
Whisper (the engine the server calls) with beam 1 and with beam 5, interleaved; the word error rate
is against the text that was spoken.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.core.config import Settings
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate
from bench import machine
from bench.common import median, percentile, table

TEXTS = (
    "Please turn on the kitchen lights and play some quiet music.",
    "What is the weather going to be like tomorrow morning?",
    "Set a timer for twenty minutes and remind me to call my sister.",
    "Can you tell me two interesting facts about the moon?",
    "How do I keep my houseplants healthy during a cold winter?",
    "Add milk, bread and three apples to my shopping list.",
    "Why is the sky blue during the day but red at sunset?",
    "What should I cook for dinner tonight with rice and eggs?",
)
SPEEDS = (0.85, 1.0, 1.25)
SNR_DB = 15.0


def clips() -> list[tuple[str, str, Audio]]:
    """(text, variant, 16 kHz audio) for every text, speed and noise."""
    from backend.app.backends import registry

    voice = registry.load_tts(Settings(_env_file=None))
    rng = np.random.default_rng(7)
    made = []
    for text in TEXTS:
        for speed in SPEEDS:
            speech = resample(voice.synthesize(SynthesisRequest(text, speed=speed)), 16000)
            made.append((text, f"x{speed:g}", speech))
            power = float(np.mean(speech.samples**2))
            noise = rng.normal(0, np.sqrt(power / 10 ** (SNR_DB / 10)), speech.samples.shape)
            noisy = Audio((speech.samples + noise).astype(np.float32), 16000)
            made.append((text, f"x{speed:g} + noise", noisy))
    return made


def measure(repeats: int) -> dict[str, Any]:
    from backend.app.backends import registry

    stt = registry.load_stt(Settings(_env_file=None))
    made = clips()
    results: dict[int, dict[str, list[float]]] = {
        beam: {"seconds": [], "wer": [], "noisy_wer": []} for beam in (1, 5)
    }
    stt.transcribe(made[0][2], TranscribeOptions(beam_size=1))  # warm-up
    for run in range(repeats):
        for i, (text, variant, audio) in enumerate(made):
            for beam in (1, 5) if (run + i) % 2 == 0 else (5, 1):
                started = time.perf_counter()
                heard = stt.transcribe(audio, TranscribeOptions(beam_size=beam, language="en")).text
                results[beam]["seconds"].append(time.perf_counter() - started)
                if run == 0:
                    kind = "noisy_wer" if "noise" in variant else "wer"
                    results[beam][kind].append(word_error_rate(text, heard))
    print(f"stt beams: { {b: {k: median(v) for k, v in r.items()} for b, r in results.items()} }", flush=True)
    return {"results": results, "clips": len(made), "runs": repeats}


def section(result: dict[str, Any]) -> list[str]:
    results: dict[int, dict[str, list[float]]] = result["results"]
    lines = [
        "## STT decoding for turns: beam 1 against beam 5",
        "",
        f"{result['clips']} clips ({len(TEXTS)} requests x speeds {', '.join(f'{s:g}' for s in SPEEDS)} x "
        f"clean / {SNR_DB:g} dB noise), the embedded Whisper tiny.en in-process, {result['runs']} runs, "
        "beams interleaved. Word error rate: the mean over the clips, against the spoken text.",
        "",
    ]
    cells = []
    for beam in (1, 5):
        r = results[beam]
        cells.append(
            [
                beam,
                f"{sum(r['wer']) / len(r['wer']):.3f}",
                f"{sum(r['noisy_wer']) / len(r['noisy_wer']):.3f}",
                f"{median(r['seconds']) * 1000:.0f}",
                f"{percentile(r['seconds'], 90) * 1000:.0f}",
            ]
        )
    lines += table(["beam", "WER clean", "WER noisy", "ms (median)", "ms (p90)"], cells)
    speedup = median(results[5]["seconds"]) / median(results[1]["seconds"])
    noisy = {beam: sum(results[beam]["noisy_wer"]) / len(results[beam]["noisy_wer"]) for beam in (1, 5)}
    saved_ms = (median(results[5]["seconds"]) - median(results[1]["seconds"])) * 1000
    lines += [
        "",
        f"Greedy decoding takes **{1 / speedup:.2f} x** beam 5's time (about {saved_ms:.0f} ms a "
        f"request here) and its word error rate on noisy speech is {noisy[1]:.3f} against "
        f"{noisy[5]:.3f}. So /conversation (streamed or not), /stt and /v1/audio/transcriptions keep "
        "`STT_BEAM_SIZE` (5): the time greedy saves is small beside an LLM reply and the error it "
        "adds is not. The WebSocket keeps `WS_STT_BEAM_SIZE=1`: there the transcription runs in the "
        "trailing silence, before the turn is known to have ended, and the pre-emptive reply starts "
        "on it, so every millisecond of it is on the path to the first audio.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
    ]
    return lines
