"""Overload: 1, 2, 8 and 50 clients sending every kind of request at once, honouring Retry-After or
not, against the default server (admission by expected wait, ADMISSION_BUDGETS) and against the
same server bounded by its queues' length only (ADMISSION_BUDGETS=turn=0,stt=0,chat=0,tts=0).

Each client sends, back to back for a fixed window, requests drawn in turn from a mix of every
route: a spoken turn (/conversation, whole and streamed), a short transcription (/stt), a short
answer (/chat, whole and streamed), a short, a long and a streamed synthesis (/tts). A client that
honours Retry-After sleeps that long after a 503 and sends the same request again; one that does
not sends its next request at once. Per level: requests served per minute (2xx), the share refused
(503), p50/p90/max latency of the served requests (per request, from its own send), the p90 of the
served spoken turns against one idle client's median, and how many served requests took over 30 s.
Goals: at 50 clients, served per minute >= one idle client's; p90 of served /conversation <= 3x its
idle median; nothing over 30 s.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.common import (
    REPO,
    free_port,
    median,
    percentile,
    pyplot,
    start_server,
    stop_server,
    table,
    wait_ready,
)

CLIP = (REPO / "tests" / "data" / "speech.wav").read_bytes()
SHORT_CLIP_TEXT = "What time is it?"
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer read aloud." for n in range(1, 13))
LEVELS = (1, 2, 8, 50)
WINDOW_S = 60.0
SLOW_S = 30.0
QUEUE_ONLY = {"ADMISSION_BUDGETS": "turn=0,stt=0,chat=0,tts=0"}


@dataclass
class Result:
    """One level's requests: (route, status, seconds) each, and the window they ran in."""

    window_s: float
    done: list[tuple[str, int, float]] = field(default_factory=list)

    def served(self, route: str | None = None) -> list[float]:
        return [s for r, status, s in self.done if 200 <= status < 300 and route in (None, r)]

    def refused(self) -> int:
        return sum(1 for _, status, _ in self.done if status == 503)


def requests(short_clip: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The mix: (route label, httpx request arguments)."""
    spoken = {"files": {"audio_file": ("q.wav", CLIP, "audio/wav")}}
    return [
        ("/conversation", {"method": "POST", "url": "/conversation", **spoken}),
        ("/stt", {"method": "POST", "url": "/stt", "files": {"file": ("s.wav", short_clip, "audio/wav")}}),
        ("/chat", {"method": "POST", "url": "/chat", "json": {"text": "Name a colour of the sky."}}),
        ("/tts short", {"method": "POST", "url": "/tts", "json": {"text": "Hello there, how are you?"}}),
        (
            "/conversation stream",
            {"method": "POST", "url": "/conversation", "data": {"stream": "true"}, **spoken},
        ),
        ("/chat stream", {"method": "POST", "url": "/chat", "json": {"text": "Say hello.", "stream": True}}),
        ("/tts long", {"method": "POST", "url": "/tts", "json": {"text": LONG_TEXT}}),
        ("/tts stream", {"method": "POST", "url": "/tts", "json": {"text": LONG_TEXT, "stream": True}}),
    ]


def _send(http: httpx.Client, args: dict[str, Any]) -> tuple[int, float, float]:
    """(status, seconds, Retry-After) of one request, its body read to the end."""
    started = time.perf_counter()
    try:
        with http.stream(**args) as response:
            for _ in response.iter_bytes():
                pass
            status = response.status_code
            retry = float(response.headers.get("Retry-After", "1") or 1)
    except httpx.HTTPError:
        status, retry = 599, 1.0
    return status, time.perf_counter() - started, retry


def level(
    base: str, mix: list[tuple[str, dict[str, Any]]], clients: int, honour: bool, window_s: float
) -> Result:
    result = Result(window_s)
    lock = threading.Lock()
    deadline = time.perf_counter() + window_s

    def client(index: int) -> None:
        order = itertools.cycle(random.Random(index).sample(mix, len(mix)))
        with httpx.Client(base_url=base, timeout=120) as http:
            route, args = next(order)
            while time.perf_counter() < deadline:
                status, seconds, retry = _send(http, args)
                if time.perf_counter() <= deadline:  # only what finished inside the window counts
                    with lock:
                        result.done.append((route, status, seconds))
                if status == 503 and honour:
                    time.sleep(min(retry, max(0.0, deadline - time.perf_counter())))
                    continue  # the same request again
                route, args = next(order)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


SERVE = "Ray Serve, 2 TTS replicas"


def _serve(root: Path) -> tuple[Any, str, Any]:
    """The Serve application on this machine (one STT and chat replica, two TTS), ready."""
    from bench.serve import launch_serve, local_config, stop_serve

    port = free_port()
    process = launch_serve(local_config(root, port, {"tts": 2}, QUEUE_SIZE="8"), root / "serve.log")
    wait_ready(process, port)
    return process, f"http://127.0.0.1:{port}", stop_serve


def measure(window_s: float = WINDOW_S, serve: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window_s, "runs": {}}
    configs: list[tuple[str, dict[str, str]]] = [("expected wait", {}), ("queue length only", QUEUE_ONLY)]
    if serve:
        configs.append((SERVE, {}))
    for config, overrides in configs:
        if config == SERVE:
            if importlib.util.find_spec("ray") is None:
                continue  # ray[serve] is not installed (requirements-serve.txt)
            root = Path(tempfile.mkdtemp(prefix="overload-serve-"))
            process, base, stop = _serve(root)
        else:
            port = free_port()
            process, base, stop = (
                start_server(port, QUEUE_SIZE="8", **overrides),
                f"http://127.0.0.1:{port}",
                stop_server,
            )
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                short = http.post("/tts", json={"text": SHORT_CLIP_TEXT}).content
            mix = requests(short)
            cases = [(n, honour) for n in LEVELS for honour in (True, False)]
            if config == "queue length only":
                cases = [(1, True), (50, False)]  # the idle baseline and the case, to compare
            elif config == SERVE:
                cases = [(1, True), (50, True), (50, False)]
            for clients, honour in cases:
                if clients == 1 and not honour:
                    continue  # one client is never refused: the same as honouring
                result = level(base, mix, clients, honour, window_s)
                out["runs"][(config, clients, honour)] = result
                print(f"{config}, {clients} clients, honour={honour}: {summary(result)}", flush=True)
                time.sleep(2)
        finally:
            stop(process)
    return out


def summary(result: Result) -> dict[str, Any]:
    served = result.served()
    turns = result.served("/conversation") + result.served("/conversation stream")
    total = len(result.done)
    return {
        "served_per_min": len(served) / result.window_s * 60,
        "refused_share": result.refused() / total if total else 0.0,
        "p50": median(served) if served else float("nan"),
        "p90": percentile(served, 90) if served else float("nan"),
        "max": max(served, default=float("nan")),
        "turn_p90": percentile(turns, 90) if turns else float("nan"),
        "turn_median": median(turns) if turns else float("nan"),
        "slow": sum(1 for s in served if s > SLOW_S),
        "errors": sum(1 for _, status, _ in result.done if status >= 500 and status != 503),
        "requests": total,
    }


def section(measured: dict[str, Any], out: Path) -> list[str]:
    runs: dict[tuple[str, int, bool], Result] = measured["runs"]
    idle = summary(runs[("expected wait", 1, True)])
    rows, figures = [], {}
    for (config, clients, honour), result in runs.items():
        s = summary(result)
        figures[(config, clients, honour)] = s
        rows.append(
            [
                config,
                clients,
                "yes" if honour else "no",
                f"{s['served_per_min']:.0f}",
                f"{s['refused_share'] * 100:.0f} %",
                f"{s['p50']:.2f}",
                f"{s['p90']:.2f}",
                f"{s['max']:.1f}",
                f"{s['turn_p90']:.2f} ({s['turn_p90'] / idle['turn_median']:.1f}x)",
                s["slow"],
                s["errors"],
            ]
        )
    fifty = [figures[("expected wait", 50, honour)] for honour in (True, False)]
    goals = [
        (
            "served per minute at 50 clients >= one idle client's (honouring Retry-After and not)",
            all(f["served_per_min"] >= idle["served_per_min"] for f in fifty),
        ),
        (
            "p90 of served spoken turns <= 3x their idle median (at 50 clients, honouring and not)",
            all(f["turn_p90"] <= 3 * idle["turn_median"] for f in fifty),
        ),
        (
            "no served request over 30 s",
            all(f["slow"] == 0 for k, f in figures.items() if k[0] == "expected wait"),
        ),
    ]
    routes = [route for route, _ in requests(b"")]
    by_route = [
        [
            f"{clients}, {'honour' if honour else 'not'}",
            *(
                f"{len(served)} ({median(served):.1f} s)" if (served := result.served(route)) else "0"
                for route in routes
            ),
        ]
        for (config, clients, honour), result in runs.items()
        if config == "expected wait" and clients >= 8
    ]
    _plot(figures, out)
    return [
        "## Overload: admission by expected wait",
        "",
        f"Every route mixed (spoken turns whole and streamed, /stt, /chat whole and streamed, /tts short, "
        f"long and streamed), each client sending back to back for {measured['window_s']:.0f} s; "
        "latencies in seconds, of the served requests. The spoken turn's idle median: "
        f"{idle['turn_median']:.2f} s; one idle client serves {idle['served_per_min']:.0f} requests "
        "a minute.",
        "",
        *table(
            [
                "admission",
                "clients",
                "honour Retry-After",
                "served / min",
                "refused",
                "p50",
                "p90",
                "max",
                "turn p90 (x idle)",
                "over 30 s",
                "5xx other",
            ],
            rows,
        ),
        "",
        *(f"- {'met' if met else 'NOT met'}: {goal}" for goal, met in goals),
        "",
        "Served per route under admission by expected wait (count in the window, median latency): "
        "spoken turns go ahead of single-stage work, and the groups refused lately keep a share.",
        "",
        *table(["clients", *routes], by_route),
        "",
        f"{SERVE}: the same application on Ray Serve (`serve run`, the ingress and one STT, one chat "
        "and two TTS replicas, all on this machine's cores). The ingress admits by the same rule, "
        "counting the TTS work spread over its two replicas; a request it refuses is answered 503 "
        "with Retry-After through Serve's proxy, which does not retry it (Serve's router only "
        "queues the calls the ingress admitted until a replica has room).",
        "",
        "![overload](overload.png)",
        "",
        f"*Machine: {machine.summary()}.*",
    ]


def _plot(figures: dict[tuple[str, int, bool], dict[str, Any]], out: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[tuple[str, bool], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for (config, clients, honour), f in figures.items():
        series[(config, honour)].append((clients, f))
    for (config, honour), points in series.items():
        points.sort()
        label = f"{config}, {'honours' if honour else 'ignores'} Retry-After"
        left.plot([c for c, _ in points], [f["served_per_min"] for _, f in points], marker="o", label=label)
        right.plot([c for c, _ in points], [f["p90"] for _, f in points], marker="o", label=label)
    for axis, title in ((left, "served per minute"), (right, "p90 latency of served (s)")):
        axis.set_xscale("log")
        axis.set_xlabel("clients")
        axis.set_title(title)
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "overload.png", dpi=110)
    plt.close(figure)
