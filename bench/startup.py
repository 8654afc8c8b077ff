"""Cold start to ready, and resident memory with every model loaded.

Starts the server as a new process several times. Cold start: process launched -> /health/ready
answers 200 (models loaded and warmed up). Memory: the process's resident set (RSS, children
included) once ready, and again after one /conversation turn has run every model.
"""

from __future__ import annotations

import statistics
from typing import Any

import httpx

from bench import machine
from bench.common import REPO, free_port, launch_server, rss_bytes, stop_server, table, wait_ready

CLIP = REPO / "tests" / "data" / "speech.wav"


def measure(repeats: int, **overrides: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(repeats):
        port = free_port()
        process = launch_server(port, **overrides)
        try:
            ready_s = wait_ready(process, port)
            ready_rss = rss_bytes(process.pid)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
                files = {"audio_file": ("speech.wav", CLIP.read_bytes(), "audio/wav")}
                http.post("/conversation", files=files).raise_for_status()
            turn_rss = rss_bytes(process.pid)
        finally:
            stop_server(process)
        rows.append(
            {"run": i + 1, "ready_s": ready_s, "ready_gib": ready_rss / 2**30, "turn_gib": turn_rss / 2**30}
        )
        print(f"startup {rows[-1]}", flush=True)
    return rows


def section(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Cold start and memory", ""]
    cells = [[r["run"], f"{r['ready_s']:.1f}", f"{r['ready_gib']:.2f}", f"{r['turn_gib']:.2f}"] for r in rows]
    lines += table(["start", "launch -> ready s", "RSS when ready GiB", "RSS after a turn GiB"], cells)
    lines += [
        "",
        f"Median cold start **{statistics.median(r['ready_s'] for r in rows):.1f} s**; resident memory "
        f"with all three models loaded **{statistics.median(r['ready_gib'] for r in rows):.2f} GiB** "
        f"({statistics.median(r['turn_gib'] for r in rows):.2f} GiB after a first turn). The first start "
        "reads the model files from disk; later ones find them in the page cache. /health answers "
        "(`loading`) within a second of launch; ready includes a warm-up inference per model.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
    ]
    return lines
