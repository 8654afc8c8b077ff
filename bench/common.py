"""Helpers shared by the benchmarks: the server under test, timing, summaries and Markdown."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_server(port: int, **overrides: str) -> subprocess.Popen[bytes]:
    """Start `python -m backend.app` on `port` (extra settings as `overrides`); do not wait."""
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", OUTPUTS_DIR=str(RESULTS / ".outputs"))
    env.update(overrides)
    return subprocess.Popen(
        [sys.executable, "-m", "backend.app", "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float = 900) -> float:
    """Seconds until /health/ready answers 200; exits with a message if the server dies first."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server failed to start; run `make run` (with the same settings) to see why")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not become ready")


def start_server(port: int, **overrides: str) -> subprocess.Popen[bytes]:
    """Start the server on `port` and wait until it is ready."""
    process = launch_server(port, **overrides)
    wait_ready(process, port)
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    parent = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def timed(fn: Callable[[], object], pause_s: float = 0.3) -> float:
    """Milliseconds `fn()` takes, after a pause: idle OpenMP threads of the previous call keep a
    core busy for ~200 ms, and each measured call should start on a quiet machine."""
    time.sleep(pause_s)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def interleaved(
    sides: dict[str, Callable[[], object]], groups: Sequence[str], repeats: int
) -> dict[str, list[float]]:
    """Each side called once to warm up, then timed `repeats` times: the sides whose key ends with
    one group's name run one after another, group by group, in an order that alternates run by run
    (so neither side always follows the other). The times per side, as `timed` gives them."""
    for fn in sides.values():
        fn()  # warm-up: first-call costs are not latency
    times: dict[str, list[float]] = {key: [] for key in sides}
    for i in range(repeats):
        for group in groups:
            keys = [k for k in sides if k.endswith(group)]
            for key in keys if i % 2 == 0 else keys[::-1]:
                times[key].append(timed(sides[key]))
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table, one line per row."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
