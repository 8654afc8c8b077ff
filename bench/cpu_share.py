"""The server on a shared CPU: does it slow down more than the libraries it wraps when another
process is loading the machine?

Five spoken requests (the latency section's, generated with the embedded voice) are transcribed
by POST /v1/audio/transcriptions and by raw faster-whisper in this process (the same model and
options, on the decoded array), and five questions are answered by POST /v1/chat/completions and
by the same llama.cpp generation in this process. Both sides are timed on an idle machine and
then beside a CPU hog (one busy-looping process per core), interleaved request by request. The
server's threads (CTranslate2, llama.cpp, ONNX Runtime; three model workers on the same cores)
are set so that its ratio to the raw library stays the same under load.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from backend.app.audio.decode import decode_audio
from backend.app.core.config import Settings
from backend.app.core.values import ChatMessage, GenerationOptions
from bench import machine
from bench.common import median, table
from bench.latency import spoken_requests
from bench.llm_engines import QUESTIONS

HOG = "while True:\n    pass\n"


@contextmanager
def cpu_hog(processes: int) -> Iterator[None]:
    """`processes` busy loops at normal priority for the length of the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(processes)]
    try:
        time.sleep(1.0)  # let the scheduler see them as CPU-bound
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


Pair = tuple[Callable[[], object], Callable[[], object]]


def sides(http: httpx.Client, settings: Settings) -> dict[str, list[Pair]]:
    """Per stage, (server call, raw call) pairs, one per input."""
    from faster_whisper import WhisperModel

    from backend.app.backends import embedded
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend

    directory = str(embedded.whisper_tiny_en_dir())
    model = WhisperModel(directory, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 0)
    beam = settings.stt.beam_size
    llm = LlamaCppChatBackend(context_tokens=settings.llm.context_tokens)
    options = GenerationOptions(64, 0.0)
    stt = []
    for _, clip in spoken_requests():
        samples = decode_audio(clip, 16000).samples

        def server_stt(clip: bytes = clip) -> object:
            files = {"file": ("q.wav", clip, "audio/wav")}
            response = http.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
            response.raise_for_status()
            return response.json()

        def raw_stt(samples: Any = samples) -> object:
            segments, _ = model.transcribe(samples, language="en", beam_size=beam, vad_filter=True)
            return list(segments)

        stt.append((server_stt, raw_stt))
    chat = []
    for question in QUESTIONS:
        messages = [ChatMessage("system", settings.llm.system_prompt), ChatMessage("user", question)]
        body = {
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": 64,
            "temperature": 0,
        }

        def server_chat(body: dict[str, Any] = body) -> object:
            response = http.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            return response.json()

        chat.append((server_chat, lambda m=messages: llm.chat(m, options)))
    return {"stt": stt, "llm": chat}


def measure(http: httpx.Client, settings: Settings, repeats: int) -> list[dict[str, Any]]:
    pairs = sides(http, settings)
    for stage in pairs.values():  # warm-up
        for server, raw in stage:
            server()
            raw()
    rows: list[dict[str, Any]] = []
    for load in ("idle", "hog"):
        hog = cpu_hog(os.cpu_count() or 1) if load == "hog" else _nothing()
        with hog:
            for stage, inputs in pairs.items():
                server_s: list[float] = []
                raw_s: list[float] = []
                for run in range(repeats):
                    for i, (server, raw) in enumerate(inputs):
                        first, second = (server, raw) if (run + i) % 2 == 0 else (raw, server)
                        a, b = timed(first), timed(second)
                        server_s.append(a if first is server else b)
                        raw_s.append(b if first is server else a)
                row = {
                    "load": load,
                    "stage": stage,
                    "server_s": median(server_s),
                    "raw_s": median(raw_s),
                    "ratio": statistics.median(s / r for s, r in zip(server_s, raw_s, strict=True)),
                }
                rows.append(row)
                print(f"cpu share {row}", flush=True)
    return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def section(rows: list[dict[str, Any]], repeats: int) -> list[str]:
    lines = [
        "## On a shared CPU: the server against the raw libraries, idle and beside a CPU hog",
        "",
        f"Five inputs per stage x {repeats} runs, server and raw call interleaved; the hog is one "
        f"busy-looping process per core ({(os.cpu_count() or 1)}), started before the timed calls.",
        "",
    ]
    cells = [
        [r["stage"], r["load"], _ms(r["raw_s"]), _ms(r["server_s"]), f"**{r['ratio']:.2f}**"] for r in rows
    ]
    lines += table(["stage", "machine", "raw ms (median)", "server ms (median)", "server / raw"], cells)
    lines += [
        "",
        "STT: POST /v1/audio/transcriptions against faster-whisper `WhisperModel.transcribe` on the "
        "decoded array (tiny.en int8, the server's beam size and VAD filter). LLM: POST "
        "/v1/chat/completions against the same llama.cpp generation in this process (64 tokens, "
        "greedy). A ratio that grows under load would mean the server's threads fight each other "
        "or the hog harder than the library alone does.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
    ]
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"
