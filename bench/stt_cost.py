"""What a transcription costs by what is in the audio: crafted loops against speech of the same length.

A few AAC frames of speech played over and over (tests/hostile_audio.looped_aac, from three places
in the test sentence, 12 s and 58 s long) drive Whisper into a repetition loop; speech of the same
lengths is the embedded voice reading assistant requests one after another. Each clip is decoded by
the raw library (faster-whisper's own defaults: every window may fill the 448-token context and
fall back through six temperatures) and by the server's engine (backend/app/backends/whisper_budget:
224 tokens a window, one fallback a window from a shared pool), the same model files, beam 5 and VAD
on both sides, interleaved. Every CTranslate2 `generate` call is counted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.core.config import Settings
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate
from bench import machine
from bench.common import median, table
from bench.stt_beam import TEXTS

LENGTHS = (12.0, 58.0)
OFFSETS = (1.0, 1.66, 2.2)


def speech(seconds: float) -> tuple[str, Audio]:
    """The embedded voice reading the requests in turn until `seconds` are filled (then cut)."""
    from backend.app.backends import registry

    voice = registry.load_tts(Settings(_env_file=None))
    words, pieces, total = [], [], 0
    for i in range(100):
        text = TEXTS[i % len(TEXTS)]
        piece = resample(voice.synthesize(SynthesisRequest(text)), 16_000).samples
        if total + len(piece) > seconds * 16_000:
            break
        words.append(text)
        pieces += [piece, np.zeros(8_000, np.float32)]
        total += len(piece) + 8_000
    return " ".join(words), Audio(np.concatenate(pieces), 16_000)


def clips() -> list[tuple[str, str | None, Audio]]:
    from tests.hostile_audio import looped_aac

    made: list[tuple[str, str | None, Audio]] = []
    for seconds in LENGTHS:
        text, audio = speech(seconds)
        made.append((f"speech {audio.duration:.0f} s", text, audio))
        for offset in OFFSETS:
            data = looped_aac(seconds, offset=offset)
            made.append(
                (
                    f"loop at {offset:g} s, {seconds:.0f} s ({len(data) // 1024} KB AAC)",
                    None,
                    decode_audio(data, 16_000),
                )
            )
    return made


def measure(repeats: int) -> dict[str, Any]:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as `python -m backend.app` runs the models
    from faster_whisper import WhisperModel

    from backend.app.backends import embedded
    from backend.app.backends.whisper import WhisperBackend
    from tests.backends.test_whisper_budget import CountingGenerate

    ours = WhisperBackend("embedded", Path("/nonexistent"))
    # The same model files and threads as the server's engine.
    raw = WhisperModel(
        str(embedded.whisper_tiny_en_dir()),
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 0,
    )
    ours._model.model = ours_counter = CountingGenerate(ours._model.model)
    raw.model = raw_counter = CountingGenerate(raw.model)
    made = clips()

    def run_raw(audio: Audio) -> str:
        segments, _ = raw.transcribe(audio.samples, beam_size=5, vad_filter=True)
        return " ".join(s.text.strip() for s in segments)

    def run_ours(audio: Audio) -> str:
        return ours.transcribe(audio, TranscribeOptions()).text

    sides = {"raw": (run_raw, raw_counter), "server": (run_ours, ours_counter)}
    rows: dict[str, dict[str, Any]] = {}
    run_ours(made[0][2]), run_raw(made[0][2])  # warm-up
    for run in range(repeats):
        for i, (label, text, audio) in enumerate(made):
            row = rows.setdefault(label, {"duration": audio.duration, "text": text})
            for side in ("raw", "server") if (run + i) % 2 == 0 else ("server", "raw"):
                transcribe, counter = sides[side]
                before, started = len(counter.calls), time.perf_counter()
                heard = transcribe(audio)
                row.setdefault(f"{side}_s", []).append(time.perf_counter() - started)
                row[f"{side}_calls"] = len(counter.calls) - before
                if text is not None:
                    row[f"{side}_wer"] = word_error_rate(text, heard)
                print(f"stt cost: {label} {side} {row[f'{side}_s'][-1]:.2f} s", flush=True)
    return {"rows": rows, "runs": repeats}


def section(result: dict[str, Any]) -> list[str]:
    rows: dict[str, dict[str, Any]] = result["rows"]
    cells = []
    for label, row in rows.items():
        raw_s, ours_s = median(row["raw_s"]), median(row["server_s"])
        cells.append(
            [
                label,
                f"{raw_s:.2f}",
                row["raw_calls"],
                f"{ours_s:.2f}",
                row["server_calls"],
                f"{ours_s / raw_s:.2f}",
                f"{ours_s / row['duration']:.3f}",
                "" if row["text"] is None else f"{row['raw_wer']:.3f} / {row['server_wer']:.3f}",
            ]
        )

    def worst(side: str, spoken: bool) -> float:
        return max(
            median(r[f"{side}_s"]) / r["duration"] for r in rows.values() if (r["text"] is not None) == spoken
        )

    speech_rtf = worst("server", True)
    return [
        "## STT: what a transcription costs by what is in the audio",
        "",
        "Crafted loops (a few AAC frames of speech repeated) against speech of the same length, the "
        "embedded Whisper tiny.en in-process, beam 5 and VAD, raw faster-whisper defaults against the "
        f"server's bounded decoding, interleaved, median of {result['runs']}. Calls: CTranslate2 "
        "`generate` calls (one a window, more with temperature fallbacks). WER: raw / server, against "
        "the spoken text.",
        "",
        *table(
            [
                "clip",
                "raw s",
                "raw calls",
                "server s",
                "server calls",
                "server / raw",
                "server s per audio s",
                "WER",
            ],
            cells,
        ),
        "",
        f"The worst loop costs the server {worst('server', False):.3f} s per second of audio "
        f"({worst('server', False) / speech_rtf:.1f} x speech's {speech_rtf:.3f}), the raw library "
        f"{worst('raw', False):.3f} ({worst('raw', False) / speech_rtf:.0f} x): the server's decoding is "
        "bounded by the audio's length (at most 224 tokens a window, and one fallback a window on "
        "average), where the raw library lets every window decode its whole context six times.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
    ]
