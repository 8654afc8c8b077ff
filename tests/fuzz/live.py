"""The live server the socket fuzz stages run against (Wyoming, /ws/conversation, /v1/realtime), and
what every stage checks around its hostile traffic (`watched`): /health polled throughout, each poll
answered 200 within HEALTH_BOUND_S; the server process alive; its resident memory back within 10 %
of where it was before the stage; nothing logged at error level; and how many requests it sent,
printed and recorded in tests/artifacts/fuzz-sockets.json.

The server runs in a process of its own (tests/server.py), so that its memory is measured apart from
the client's. Its limits are small where small limits make the hostile cases quick (idle timeouts of
2 s, 8 MB of held Wyoming audio), and its LLM keeps no prompt cache: a cache that grows up to its
bound (256 MB by default) would read as memory that does not come back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx

from tests.ports import free_port
from tests.server import REPO, rss_kib, start_server, stop_server

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
SEED = 20_240_611
"""Each stage draws its cases from a random.Random seeded with SEED and the stage's name: the same
cases on every run, so a failure in CI reproduces locally."""
ARTIFACTS = REPO / "tests" / "artifacts"
CASE_BOUND_S = 60.0
"""The longest a client may wait for an answer: a refused request is answered at once, an idle
connection after IDLE_S, a valid one may wait behind others for a model on two busy cores."""
HEALTH_BOUND_S = 1.0
"""The slowest /health answer a stage may see while it runs."""
MEMORY_SLACK = 1.10
"""After a stage the server's resident memory is back within 10 % of its level before."""
MEMORY_SETTLE_S = 25.0
"""How long memory may take to come back: the server trims its heap when its last Wyoming
connection closes and when a model worker falls idle, at most once every 10 s."""

IDLE_S = 2.0
WYOMING_MAX_CONNECTIONS = 32
WYOMING_PER_CLIENT = 8
WYOMING_BUFFERED_MB = 8
WYOMING_MAX_EVENT_BYTES = 4 * 1024 * 1024
WS_MAX_FRAME_BYTES = 65_536
WS_MAX_EVENT_BYTES = 262_144
WS_MAX_SESSIONS = 8
MAX_AUDIO_SECONDS = 60
SERVER_ENV = {
    "LOG_LEVEL": "warning",
    "LLM_MAX_TOKENS": "2",
    "LLM_CONTEXT_TOKENS": "512",
    "LLM_PROMPT_CACHE_MB": "0",
    "MAX_TTS_CHARS": "40",
    "STT_BEAM_SIZE": "1",
    "QUEUE_SIZE": "8",
    "MAX_AUDIO_SECONDS": str(MAX_AUDIO_SECONDS),
    "WYOMING_IDLE_TIMEOUT_S": str(IDLE_S),
    "WYOMING_MAX_CONNECTIONS": str(WYOMING_MAX_CONNECTIONS),
    "WYOMING_MAX_CONNECTIONS_PER_CLIENT": str(WYOMING_PER_CLIENT),
    "WYOMING_MAX_BUFFERED_MB": str(WYOMING_BUFFERED_MB),
    "WYOMING_MAX_EVENT_BYTES": str(WYOMING_MAX_EVENT_BYTES),
    "WS_IDLE_TIMEOUT_S": str(IDLE_S),
    "WS_MAX_FRAME_BYTES": str(WS_MAX_FRAME_BYTES),
    "WS_MAX_EVENT_BYTES": str(WS_MAX_EVENT_BYTES),
    "WS_MAX_SESSIONS": str(WS_MAX_SESSIONS),
}


@dataclasses.dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    http: str
    wyoming_port: int
    log: Path

    @property
    def ws(self) -> str:
        return self.http.replace("http", "ws", 1)


@contextlib.contextmanager
def live_server(root: Path) -> Iterator[LiveServer]:
    port = free_port()
    env = {**SERVER_ENV, "WYOMING_URI": f"tcp://127.0.0.1:{port}"}
    process, base = start_server(root, "sockets.log", None, **env)
    try:
        yield LiveServer(process, base, port, root / "sockets.log")
    finally:
        stop_server(process)


def rng_for(stage: str) -> random.Random:
    return random.Random(f"{SEED}-{stage}")


@dataclasses.dataclass
class Watch:
    """What one stage saw: requests sent, /health answers, the server's memory."""

    stage: str
    server: LiveServer
    requests: int = 0
    connections: int = 0
    health: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    log_offset: int = 0
    classes: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, kind: str, requests: int = 1) -> None:
        """A connection of class `kind` that sent `requests` requests (events, frames)."""
        self.connections += 1
        self.requests += requests
        self.classes[kind] = self.classes.get(kind, 0) + 1

    def saw(self, kinds: Iterable[str]) -> None:
        """Requests of these classes went in a connection counted already."""
        for kind in kinds:
            self.classes[kind] = self.classes.get(kind, 0) + 1


def _poll_health(watch: Watch, stop: threading.Event) -> None:
    with httpx.Client(base_url=watch.server.http, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = client.get("/health").status_code
            except httpx.HTTPError:
                status = 0
            watch.health.append((time.perf_counter() - started, status))
            with contextlib.suppress(Exception):
                watch.rss_peak_kib = max(watch.rss_peak_kib, rss_kib(watch.server.process.pid))
            stop.wait(0.2)


def server_errors(server: LiveServer, offset: int = 0) -> list[str]:
    """Lines the server logged at error level (or tracebacks) from byte `offset` on."""
    with server.log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if str(record.get("level", "")).lower() in ("error", "critical"):
                found.append(line)
        elif "Traceback" in line:
            found.append(line)
    return found


def _settled_rss(watch: Watch) -> int:
    """The server's memory once it has given back what it freed: asks for a heap trim the way the
    server does (a model worker falling idle, here after a one-word /tts) and waits for it."""
    pid = watch.server.process.pid
    bound = watch.rss_before_kib * MEMORY_SLACK
    deadline = time.monotonic() + MEMORY_SETTLE_S
    asked = 0.0
    with httpx.Client(base_url=watch.server.http, timeout=60) as client:
        while (rss := rss_kib(pid)) > bound and time.monotonic() < deadline:
            if time.monotonic() - asked > 5:
                client.post("/tts", json={"text": "Ok."})
                watch.requests += 1
                asked = time.monotonic()
            time.sleep(0.5)
    return rss


@contextlib.contextmanager
def watched(server: LiveServer, stage: str) -> Iterator[Watch]:
    """Run a stage under watch; on the way out check what every stage must leave behind."""
    watch = Watch(stage, server, log_offset=server.log.stat().st_size)
    watch.rss_before_kib = watch.rss_peak_kib = rss_kib(server.process.pid)
    stop = threading.Event()
    poller = threading.Thread(target=_poll_health, args=(watch, stop), daemon=True)
    poller.start()
    started = time.monotonic()
    try:
        yield watch
    finally:
        stop.set()
        poller.join(30)
    took = time.monotonic() - started
    assert server.process.poll() is None, f"{stage}: the server process died"
    watch.rss_after_kib = _settled_rss(watch)
    slow = [round(s, 2) for s, _ in watch.health if s > HEALTH_BOUND_S]
    failed = [code for _, code in watch.health if code != 200]
    errors = server_errors(server, watch.log_offset)
    record = {
        "stage": stage,
        "scale": SCALE,
        "requests": watch.requests,
        "connections": watch.connections,
        "classes": watch.classes,
        "seconds": round(took, 1),
        "health_polls": len(watch.health),
        "health_max_s": round(max((s for s, _ in watch.health), default=0), 3),
        "rss_mb": [watch.rss_before_kib // 1024, watch.rss_peak_kib // 1024, watch.rss_after_kib // 1024],
    }
    _record(record)
    print(
        f"fuzz {stage}: {watch.requests} requests over {watch.connections} connections in {took:.0f} s; "
        f"/health max {record['health_max_s']} s; RSS before/peak/after {record['rss_mb']} MB"
    )
    assert not errors, f"{stage}: the server logged errors:\n" + "\n".join(errors[:10])
    assert not failed, f"{stage}: /health answered {failed[:10]} (0: no answer)"
    assert not slow, f"{stage}: /health took over {HEALTH_BOUND_S} s {len(slow)} times: {slow[:10]}"
    assert watch.health, f"{stage}: /health was never polled"
    assert watch.rss_after_kib <= watch.rss_before_kib * MEMORY_SLACK, (
        f"{stage}: the server's memory did not come back: {record['rss_mb']} MB (before, peak, after)"
    )


def wrong_answers(what: str, failures: list[str]) -> str:
    """The assertion message for a stage's wrong answers (each "class: what was wrong"): how many
    of each class, then the first few in full."""
    by_class = Counter(failure.split(":", 1)[0] for failure in failures)
    return f"{len(failures)} {what} were answered wrongly {dict(by_class)}:\n" + "\n".join(failures[:15])


def _record(record: dict[str, object]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "fuzz-sockets.json"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    if not isinstance(records, dict):
        records = {}
    records[str(record["stage"])] = record
    path.write_text(json.dumps(records, indent=1))
