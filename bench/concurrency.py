"""Concurrency sweep: 1, 2 and 8 clients each sending whole spoken /conversation turns at once,
with the models taking turns on the cores (CPU_SLICE_MS, the default) and without (0), side by side.

The spoken requests are everyday questions (the quality bench's first English ones, spoken by the
server's own default voice before the sweep), so turns differ in length and answer as they do in
use; each client goes through them in its own order, a new conversation per turn. Per level, for a
fixed window: turns completed in it per minute (throughput, and its ratio to one client's), p50,
p90 and max of the turn latency, and refusals (503: more requests than a model's queue admits; the
server runs with QUEUE_SIZE >= the largest level so that the sweep measures queueing).

Beside it, the case the turns are for: a short /chat answer alone, and while another client's
long answer is synthesised by Piper (`piper:joe`, an engine that runs on every core).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.common import REPO, median, percentile, pyplot, table
from bench.llm_questions import ENGLISH

CLIP = REPO / "tests" / "data" / "speech.wav"
LEVELS = (1, 2, 8)
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer read aloud." for n in range(1, 41))
QUESTION = "What is the capital of France?"
QUESTIONS = 8


def spoken_questions(http: httpx.Client, count: int = QUESTIONS) -> list[bytes]:
    """`count` everyday questions as WAV, in the server's default voice."""
    clips = []
    for question in ENGLISH[:count]:
        response = http.post("/tts", json={"text": question.prompt})
        response.raise_for_status()
        clips.append(response.content)
    return clips


def measure(
    base: str, clips: list[bytes], window_s: float, levels: tuple[int, ...] = LEVELS
) -> list[dict[str, Any]]:
    rows = []
    for clients in levels:
        rows.append(_level(base, clips, clients, window_s=window_s))
        print(f"concurrency {clients}: {rows[-1]}", flush=True)
        time.sleep(1)
    return rows


def _level(
    base: str,
    clips: list[bytes],
    clients: int,
    turns_per_client: int | None = None,
    window_s: float | None = None,
) -> dict[str, Any]:
    """`clients` clients sending turns back to back, each `turns_per_client` turns, or as many as
    they can start within `window_s` (then only the turns completed inside the window count, so
    the tail of the last ones does not dilute the rate)."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    began = time.perf_counter()
    deadline = began + window_s if window_s else None

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            turn = 0
            while (turns_per_client is None or turn < turns_per_client) and (
                deadline is None or time.perf_counter() < deadline
            ):
                clip = clips[(index * 3 + turn) % len(clips)]
                turn += 1
                started = time.perf_counter()
                files = {"audio_file": ("question.wav", clip, "audio/wav")}
                response = http.post("/conversation", files=files)
                finished = time.perf_counter()
                if deadline is not None and finished > deadline:
                    return  # ran past the window: not counted
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        latencies.append(finished - started)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = window_s or (time.perf_counter() - began)
    nan = float("nan")
    return {
        "clients": clients,
        "turns": len(latencies),
        "refused": statuses.count(503),
        "failed": sum(1 for s in statuses if s not in (200, 503)),
        "wall_s": wall,
        "per_min": 60 * len(latencies) / wall,
        "p50": percentile(latencies, 50) if latencies else nan,
        "p90": percentile(latencies, 90) if latencies else nan,
        "max": max(latencies) if latencies else nan,
    }


def neighbour(base: str, repeats: int) -> dict[str, float]:
    """Seconds for a /chat answer alone, and beside a long streamed Piper synthesis (median of
    `repeats`), and the synthesis's own seconds alone and beside it."""
    alone, beside, speech_alone, speech_beside = [], [], [], []
    with httpx.Client(base_url=base, timeout=600) as http:

        def chat() -> float:
            started = time.perf_counter()
            http.post("/chat", json={"text": QUESTION}).raise_for_status()
            return time.perf_counter() - started

        def speech(took: list[float], started_event: threading.Event | None = None) -> None:
            started = time.perf_counter()
            body = {"text": LONG_TEXT, "voice": "piper:joe", "stream": True}
            with http.stream("POST", "/tts", json=body) as response:
                response.raise_for_status()
                for _ in response.iter_bytes():
                    if started_event is not None:
                        started_event.set()
            took.append(time.perf_counter() - started)

        chat()  # warm
        for _ in range(repeats):
            alone.append(chat())
            speech(speech_alone)
            playing = threading.Event()
            other = threading.Thread(target=speech, args=(speech_beside, playing))
            other.start()
            playing.wait()
            beside.append(chat())
            other.join()
    return {
        "chat_alone": median(alone),
        "chat_beside": median(beside),
        "tts_alone": median(speech_alone),
        "tts_beside": median(speech_beside),
    }


MODES = ("turns", "at once")
"""The models taking turns on the cores (CPU_SLICE_MS, the default), and running at once (0)."""


def section(
    sweeps: dict[str, list[dict[str, Any]]],
    neighbours: dict[str, dict[str, float]],
    window_s: float,
    clips: int,
    queue_size: int,
    slice_ms: int,
    out: Path,
) -> list[str]:
    lines = [
        "## Concurrency sweep",
        "",
        f"Whole /conversation turns (STT -> LLM -> TTS -> WAV) on {clips} different spoken everyday "
        f"questions, every client sending turns back to back for {window_s:g} s; only turns "
        f"completed inside that window count. QUEUE_SIZE={queue_size}. Two servers, one after the "
        f"other: the models taking turns on the cores (CPU_SLICE_MS={slice_ms}, the default) and "
        "running at once (CPU_SLICE_MS=0).",
        "",
    ]
    cells = []
    for mode, rows in sweeps.items():
        single = rows[0]["per_min"]
        cells += [
            [
                mode, r["clients"], r["turns"], f"{r['per_min']:.1f}", f"{r['per_min'] / single:.2f} x",
                f"{r['p50']:.2f}", f"{r['p90']:.2f}", f"{r['max']:.2f}", r["refused"], r["failed"],
            ]
            for r in rows
        ]  # fmt: skip
    lines += table(
        [
            "cores", "clients", "turns", "turns / min", "vs 1 client", "p50 s", "p90 s", "max s", "503",
            "other errors",
        ],
        cells,
    )  # fmt: skip
    lines += [
        "",
        "Each model runs one call at a time (its own worker thread), so concurrent turns overlap "
        "only across stages (one client's STT with another's LLM or TTS); beyond that, more "
        "clients wait in the queues (p50 grows with the number of clients, as each turn waits for "
        "the ones ahead of it).",
        "",
        f"A short /chat answer ({QUESTION!r}) alone and while another client's {len(LONG_TEXT)}-"
        "character answer is synthesised by Piper (`piper:joe`, streamed), medians:",
        "",
    ]
    lines += table(
        ["cores", "/chat alone s", "/chat beside Piper s", "Piper alone s", "Piper beside /chat s"],
        [
            [mode, f"{n['chat_alone']:.2f}", f"{n['chat_beside']:.2f}", f"{n['tts_alone']:.2f}",
             f"{n['tts_beside']:.2f}"]
            for mode, n in neighbours.items()
        ],
    )  # fmt: skip
    lines += [
        "",
        "Every CPU engine here runs one call on all the cores; two at once fight for them (llama.cpp's "
        "threads wait for each other after every step), which is what the turns avoid.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![concurrency](concurrency.png)",
        "",
    ]
    plot(sweeps, out / "concurrency.png")
    return lines


def plot(sweeps: dict[str, list[dict[str, Any]]], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in sweeps.items():
        clients = [r["clients"] for r in rows]
        left.plot(clients, [r["per_min"] for r in rows], marker="o", label=mode)
        right.plot(clients, [r["p90"] for r in rows], marker="s", label=f"{mode}: p90")
        right.plot(clients, [r["p50"] for r in rows], marker="o", linestyle="--", label=f"{mode}: p50")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(LEVELS, [str(c) for c in LEVELS])
        axis.set_xlabel("concurrent clients")
        axis.legend()
    left.set_ylabel("completed turns per minute")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    right.set_ylabel("turn latency, s")
    right.set_title("Latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
