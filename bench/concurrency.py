"""Concurrency sweep: 1, 2, 4 and 8 clients each sending whole /conversation turns at once.

Every client sends the same spoken request (tests/data/speech.wav) in a new conversation, one turn
after another. Per level: completed turns per minute (throughput), p50/p95 of the turn latency, and
refusals (503: more requests than a model's queue admits; the server runs with QUEUE_SIZE >= the
largest level so that the sweep measures queueing, not refusals).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.common import REPO, percentile, pyplot, table

CLIP = REPO / "tests" / "data" / "speech.wav"
LEVELS = (1, 2, 4, 8)


def measure(base: str, turns_per_client: int, levels: tuple[int, ...] = LEVELS) -> list[dict[str, Any]]:
    clip = CLIP.read_bytes()
    rows = []
    for clients in levels:
        rows.append(_level(base, clip, clients, turns_per_client))
        print(f"concurrency {clients}: {rows[-1]}", flush=True)
        time.sleep(1)
    return rows


def _level(base: str, clip: bytes, clients: int, turns_per_client: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            for _ in range(turns_per_client):
                started = time.perf_counter()
                files = {"audio_file": ("speech.wav", clip, "audio/wav")}
                response = http.post("/conversation", files=files)
                elapsed = time.perf_counter() - started
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        latencies.append(elapsed)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "turns": len(latencies),
        "refused": statuses.count(503),
        "failed": sum(1 for s in statuses if s not in (200, 503)),
        "wall_s": wall,
        "per_min": 60 * len(latencies) / wall,
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p95": percentile(latencies, 95) if latencies else float("nan"),
    }


def section(rows: list[dict[str, Any]], turns_per_client: int, queue_size: int, out: Path) -> list[str]:
    single = rows[0]["per_min"]
    lines = [
        "## Concurrency sweep",
        "",
        "Whole /conversation turns (the 3.3 s spoken request; STT -> LLM -> TTS -> WAV), each client "
        f"sending {turns_per_client} turns back to back; QUEUE_SIZE={queue_size}.",
        "",
    ]
    cells = [
        [
            r["clients"], r["turns"], f"{r['per_min']:.1f}", f"{r['per_min'] / single:.2f} x",
            f"{r['p50']:.2f}", f"{r['p95']:.2f}", r["refused"], r["failed"],
        ]
        for r in rows
    ]  # fmt: skip
    lines += table(
        ["clients", "turns", "turns / min", "vs 1 client", "p50 s", "p95 s", "503", "other errors"], cells
    )
    lines += [
        "",
        "Each model runs one call at a time (its own worker thread), so concurrent turns overlap "
        "only across stages (one client's STT with another's LLM or TTS): throughput rises while "
        "stages can overlap, and beyond that extra clients wait in the queues (p50 grows).",
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
    left.set_title("Throughput")
    right.plot(clients, [r["p50"] for r in rows], marker="o", label="p50")
    right.plot(clients, [r["p95"] for r in rows], marker="s", label="p95")
    right.set_xscale("log", base=2)
    right.set_xticks(clients, [str(c) for c in clients])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("turn latency, s")
    right.set_title("Latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
