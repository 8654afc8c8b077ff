"""Concurrency sweep: 1, 2, 4 and 8 clients each sending whole spoken /conversation turns at once.

The spoken requests are everyday questions (the quality bench's first English ones, spoken by the
server's own default voice before the sweep), so turns differ in length and answer as they do in
use; each client goes through them in its own order, a new conversation per turn. Per level, for a
fixed window: turns completed in it per minute (throughput, and its ratio to one client's), p50,
p90 and max of the turn latency, and refusals (503: more requests than a model's queue admits; the
server runs with QUEUE_SIZE >= the largest level so that the sweep measures queueing).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.common import REPO, percentile, pyplot, table
from bench.llm_questions import ENGLISH

CLIP = REPO / "tests" / "data" / "speech.wav"
LEVELS = (1, 2, 4, 8)
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


def section(rows: list[dict[str, Any]], window_s: float, clips: int, queue_size: int, out: Path) -> list[str]:
    single = rows[0]["per_min"]
    lines = [
        "## Concurrency sweep",
        "",
        f"Whole /conversation turns (STT -> LLM -> TTS -> WAV) on {clips} different spoken everyday "
        f"questions, every client sending turns back to back for {window_s:g} s; only turns "
        f"completed inside that window count. QUEUE_SIZE={queue_size}.",
        "",
    ]
    cells = [
        [
            r["clients"], r["turns"], f"{r['per_min']:.1f}", f"{r['per_min'] / single:.2f} x",
            f"{r['p50']:.2f}", f"{r['p90']:.2f}", f"{r['max']:.2f}", r["refused"], r["failed"],
        ]
        for r in rows
    ]  # fmt: skip
    lines += table(
        ["clients", "turns", "turns / min", "vs 1 client", "p50 s", "p90 s", "max s", "503", "other errors"],
        cells,
    )
    lines += [
        "",
        "Each model runs one call at a time (its own worker thread), so concurrent turns overlap "
        "only across stages (one client's STT with another's LLM or TTS), and every engine's idle "
        "threads sleep rather than spin, so overlapping stages share the cores instead of fighting "
        "for them: throughput holds while more clients wait in the queues (p50 grows with the "
        "number of clients, as each turn waits for the ones ahead of it).",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![concurrency](concurrency.png)",
        "",
    ]
    plot(rows, out / "concurrency.png")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    clients = [r["clients"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(clients, [r["per_min"] for r in rows], marker="o")
    left.set_xscale("log", base=2)
    left.set_xticks(clients, [str(c) for c in clients])
    left.set_xlabel("concurrent clients")
    left.set_ylabel("completed turns per minute")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    right.plot(clients, [r["p50"] for r in rows], marker="o", label="p50")
    right.plot(clients, [r["p90"] for r in rows], marker="s", label="p90")
    right.set_xscale("log", base=2)
    right.set_xticks(clients, [str(c) for c in clients])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("turn latency, s")
    right.set_title("Latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
