"""Soak test: mixed traffic on every route for a while, watching the server's memory and files.

Run with `make soak` (or `.venv/bin/python -m bench.soak [--minutes 10] [--clients 2]`). It starts
the real server (`python -m backend.app`, embedded models) on a free localhost port, then clients
loop over every route (STT, chat, TTS, /conversation whole and streamed, the realtime WebSocket,
/optimize, the /v1 routes, voices, conversations, outputs, health) until the time is up. Every
`--interval` seconds (10) it records the server's resident memory (RSS) and open file descriptors.

Verdict: after the warm-up (the first fifth of the run, at least one minute), neither RSS nor the
descriptor count may grow by more than 10% (the median of the last three samples against the first
sample after warm-up). It exits 1 when one did, or when any request got a 5xx. Results:
bench/results/soak.md (table, request counts) and bench/results/soak.png (chart).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import soundfile as sf
from websockets.sync.client import connect as ws_connect

from bench.common import free_port, start_server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CLIP = REPO / "tests" / "data" / "speech.wav"
MAX_MINUTES = 120
GROWTH_LIMIT = 0.10


class Traffic:
    """One client's loop over every route; counts (route, status) pairs."""

    def __init__(self, base: str, seed: int) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=120)
        self.random = random.Random(seed)
        self.clip = CLIP.read_bytes()
        audio, self.rate = sf.read(io.BytesIO(self.clip), dtype="int16")
        self.pcm = (audio if audio.ndim == 1 else audio[:, 0]).tobytes()
        self.counts: Counter[tuple[str, int]] = Counter()

    def _note(self, route: str, response: httpx.Response) -> httpx.Response:
        self.counts[(route, response.status_code)] += 1
        return response

    def _file(self) -> dict[str, tuple[str, bytes, str]]:
        return {"file": ("speech.wav", self.clip, "audio/wav")}

    def round(self) -> None:
        n = self.random.randrange(1_000_000)
        h = self.http
        self._note("GET /health", h.get("/health"))
        self._note("POST /stt", h.post("/stt", files=self._file()))
        chat = self._note("POST /chat", h.post("/chat", json={"text": f"Tell me about the number {n}."}))
        cid = chat.json().get("conversation_id") if chat.status_code == 200 else None
        self._note("POST /tts", h.post("/tts", json={"text": f"The number is {n}.", "format": "mp3"}))
        turn = self._note(
            "POST /conversation",
            h.post("/conversation", files={"audio_file": ("speech.wav", self.clip, "audio/wav")}),
        )
        if turn.status_code == 200:
            self._note("GET /outputs", h.get(turn.json()["audio_url"]))
            self._note("DELETE /conversations", h.delete(f"/conversations/{turn.json()['conversation_id']}"))
        with h.stream(
            "POST",
            "/conversation",
            files={"audio_file": ("s.wav", self.clip, "audio/wav")},
            data={"stream": "true"},
        ) as streamed:
            for _ in streamed.iter_bytes():
                pass
            self.counts[("POST /conversation stream", streamed.status_code)] += 1
        self._note(
            "POST /optimize",
            h.post("/optimize", json={"text": "hello world how are you", "mode": "punctuate"}),
        )
        self._note(
            "POST /v1/audio/transcriptions",
            h.post(
                "/v1/audio/transcriptions",
                files=self._file(),
                data={"model": "whisper-1", "response_format": "srt"},
            ),
        )
        self._note(
            "POST /v1/audio/speech",
            h.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": f"Number {n}."}),
        )
        self._note(
            "POST /v1/chat/completions",
            h.post(
                "/v1/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Say hi."}],
                    "max_tokens": 8,
                },
            ),
        )
        self._note("GET /v1/models", h.get("/v1/models"))
        self._note("GET /voices", h.get("/voices"))
        self._note("GET /speaker_info", h.get("/speaker_info"))
        self._note("GET /conversations", h.get("/conversations"))
        if cid:
            self._note("GET /conversations/{id}", h.get(f"/conversations/{cid}"))
        self._note("POST /stt bad", h.post("/stt", files={"file": ("x.wav", os.urandom(2000), "audio/wav")}))
        self._realtime()

    def _realtime(self) -> None:
        url = self.base.replace("http://", "ws://") + "/ws/conversation"
        status = 200
        try:
            with ws_connect(url, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "start", "sample_rate": self.rate}))
                block = self.rate // 5 * 2  # 200 ms of PCM16
                for i in range(0, len(self.pcm), block):
                    ws.send(self.pcm[i : i + block])
                for _ in range(10):  # two seconds of silence end the turn
                    ws.send(bytes(block))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    message = ws.recv(timeout=60)
                    if isinstance(message, str) and json.loads(message)["type"] in ("turn_end", "error"):
                        break
                ws.send(json.dumps({"type": "stop"}))
        except Exception:  # the verdict counts it; the soak goes on
            status = 599
        self.counts[("WS /ws/conversation", status)] += 1


def sample(process: psutil.Process) -> tuple[float, int]:
    return process.memory_info().rss / 1024 / 1024, process.num_fds()


def growth(values: list[float], start: int) -> float:
    baseline = values[start]
    end = statistics.median(values[-3:])
    return (end - baseline) / baseline if baseline else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=10.0, help=f"duration (default 10, at most {MAX_MINUTES})"
    )
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients (default 2)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    args = parser.parse_args()
    minutes = min(max(args.minutes, 1.0), MAX_MINUTES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / ".soak"
    port = free_port()
    print("starting the server ...", flush=True)
    server = start_server(
        port, OUTPUTS_DIR=str(workdir / "outputs"), DATA_DIR=str(workdir / "data"), LLM_MAX_TOKENS="24"
    )
    process = psutil.Process(server.pid)
    base = f"http://127.0.0.1:{port}"
    clients = [Traffic(base, seed) for seed in range(args.clients)]
    stop = threading.Event()
    failures: list[str] = []

    def drive(client: Traffic) -> None:
        while not stop.is_set():
            try:
                client.round()
            except Exception as e:  # a transport error is a finding, not a crash of the soak
                failures.append(repr(e))
                time.sleep(1)

    threads = [threading.Thread(target=drive, args=(c,), daemon=True) for c in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    times: list[float] = []
    rss: list[float] = []
    fds: list[float] = []
    try:
        while True:
            elapsed = time.monotonic() - started
            memory, files = sample(process)
            times.append(elapsed / 60)
            rss.append(memory)
            fds.append(files)
            print(f"{elapsed / 60:6.1f} min  RSS {memory:7.1f} MiB  fds {files:4d}", flush=True)
            if elapsed >= minutes * 60:
                break
            time.sleep(min(args.interval, minutes * 60 - elapsed))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        server.terminate()
        server.wait(timeout=60)

    counts: Counter[tuple[str, int]] = Counter()
    for client in clients:
        counts.update(client.counts)
    warm_minutes = max(1.0, minutes / 5)
    warm_index = next((i for i, t in enumerate(times) if t >= warm_minutes), 0)
    rss_growth, fd_growth = growth(rss, warm_index), growth(fds, warm_index)
    server_errors = sum(n for (_, status), n in counts.items() if status >= 500 and status != 503)
    passed = rss_growth <= GROWTH_LIMIT and fd_growth <= GROWTH_LIMIT and server_errors == 0 and not failures
    write_report(args, minutes, times, rss, fds, warm_index, rss_growth, fd_growth, counts, failures, passed)
    print(f"RSS growth after warm-up {rss_growth:+.1%}, fds {fd_growth:+.1%}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def write_report(
    args: argparse.Namespace,
    minutes: float,
    times: list[float],
    rss: list[float],
    fds: list[float],
    warm_index: int,
    rss_growth: float,
    fd_growth: float,
    counts: Counter[tuple[str, int]],
    failures: list[str],
    passed: bool,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(times, rss, marker=".")
    top.set_ylabel("RSS (MiB)")
    bottom.plot(times, fds, marker=".", color="tab:orange")
    bottom.set_ylabel("open file descriptors")
    bottom.set_xlabel("minutes")
    for axis in (top, bottom):
        axis.axvline(times[warm_index], color="grey", linestyle="--", linewidth=1)
        axis.grid(alpha=0.3)
    top.set_title(f"Soak: {args.clients} clients, {minutes:g} min (dashed: end of warm-up)")
    figure.tight_layout()
    figure.savefig(RESULTS / "soak.png", dpi=110)

    total = sum(counts.values())
    lines = [
        "# Soak test",
        "",
        f"`python -m bench.soak --minutes {minutes:g} --clients {args.clients} "
        f"--interval {args.interval:g}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, embedded models. "
        f"{total} requests.",
        "",
        f"**{'PASS' if passed else 'FAIL'}**: after the warm-up ({times[warm_index]:.1f} min), RSS grew "
        f"{rss_growth:+.1%} and open file descriptors {fd_growth:+.1%} (limit +{GROWTH_LIMIT:.0%} each).",
        "",
        "![RSS and file descriptors over time](soak.png)",
        "",
        "| minute | RSS (MiB) | open fds |",
        "|---:|---:|---:|",
        *(f"| {t:.1f} | {r:.1f} | {int(f)} |" for t, r, f in zip(times, rss, fds, strict=True)),
        "",
        "| route | status | requests |",
        "|---|---:|---:|",
        *(f"| {route} | {status} | {n} |" for (route, status), n in sorted(counts.items())),
        "",
    ]
    if failures:
        lines += ["Client-side failures:", "", *(f"- `{f}`" for f in failures[:20]), ""]
    (RESULTS / "soak.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
