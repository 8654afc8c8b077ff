"""Two server processes (`python -m backend.app`) on one real PostgreSQL database (DATABASE_URL),
each with its own DATA_DIR and OUTPUTS_DIR: a conversation's turns sent to both at once are stored
in pairs, in order; reply audio spoken by one is served by the other; a turn acknowledged by a
replica survives its SIGKILL; a database that is down, at start-up or mid-run, is a 503 with
Retry-After and a log line naming it, and the replicas recover when it returns."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.app.audio.decode import decode_audio
from tests.conftest import DATA
from tests.postgres import PostgresServer
from tests.server import server_dir, start_server, stop_server

Replica = tuple[subprocess.Popen[bytes], str, Path]


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, database: str
) -> Iterator[list[tuple[subprocess.Popen[bytes], str, Path]]]:
    started = []
    try:
        for name in ("replica-a", "replica-b"):
            tmp = server_dir(tmp_path_factory, name)
            process, base = start_server(tmp, DATABASE_URL=database, LLM_MAX_TOKENS="12")
            started.append((process, base, tmp))
        yield started
    finally:
        for process, _, _ in started:
            stop_server(process)


def test_turns_sent_to_two_replicas_at_once_are_stored_in_pairs_in_order(replicas: list[Replica]) -> None:
    (_, a, _), (_, b, _) = replicas
    conversation = "shared-conversation-1"
    questions = [f"Question number {i}: what is {i} plus {i}?" for i in range(6)]

    def ask(i: int) -> int:
        base = a if i % 2 == 0 else b
        response = httpx.post(
            f"{base}/chat", json={"text": questions[i], "conversation_id": conversation}, timeout=120
        )
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(ask, range(6)))
    assert statuses == [200] * 6
    for base in (a, b):  # one history, whichever replica is asked
        turns = httpx.get(f"{base}/conversations/{conversation}", timeout=10).json()["turns"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * 6
        assert sorted(t["text"] for t in turns[::2]) == sorted(questions)
        assert all(t["text"] for t in turns[1::2])


def test_reply_audio_spoken_by_one_replica_is_served_by_the_other(replicas: list[Replica]) -> None:
    (_, a, tmp_a), (_, b, tmp_b) = replicas
    files = {"audio_file": ("speech.wav", (DATA / "speech.wav").read_bytes(), "audio/wav")}
    turn = httpx.post(f"{a}/conversation", files=files, timeout=180)
    assert turn.status_code == 200, turn.text
    url = turn.json()["audio_url"]
    fetched = httpx.get(f"{b}{url}", timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("audio/")
    assert decode_audio(fetched.content).duration > 0.3
    assert not any((tmp_a / "outputs").glob("*.wav")) and not any((tmp_b / "outputs").glob("*.wav"))
    conversation = turn.json()["conversation_id"]
    turns = httpx.get(f"{b}/conversations/{conversation}", timeout=10).json()["turns"]
    assert turns[1]["audio_url"] == url


def test_a_turn_acknowledged_by_a_replica_survives_its_sigkill(
    tmp_path_factory: pytest.TempPathFactory, database: str, replicas: list[Replica]
) -> None:
    (_, _, _), (_, b, _) = replicas
    tmp = server_dir(tmp_path_factory, "doomed")
    doomed, base = start_server(tmp, DATABASE_URL=database, LLM_MAX_TOKENS="8")
    try:
        reply = httpx.post(
            f"{base}/chat", json={"text": "Remember the word heron.", "conversation_id": "kill-1"}
        )
        assert reply.status_code == 200
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
    finally:
        stop_server(doomed)
    turns = httpx.get(f"{b}/conversations/kill-1", timeout=10).json()["turns"]
    assert len(turns) == 2 and turns[0]["text"] == "Remember the word heron."


def test_a_database_that_goes_away_is_a_503_and_comes_back(
    postgres: PostgresServer, replicas: list[Replica], tmp_path_factory: pytest.TempPathFactory, database: str
) -> None:
    (_, a, tmp_a), _ = replicas
    postgres.stop()
    late: subprocess.Popen[bytes] | None = None
    try:
        down = httpx.post(
            f"{a}/chat", json={"text": "Are you there?", "conversation_id": "down-1"}, timeout=60
        )
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "storage_unavailable" and "Retry-After" in down.headers
        listing = httpx.get(f"{a}/conversations", timeout=60)
        assert listing.status_code == 503
        health = httpx.get(f"{a}/health", timeout=10).json()
        assert health["status"] == "degraded" and "unreachable" in health["modules"]["storage"]["error"]
        log = (tmp_a / "server.log").read_text()
        assert "127.0.0.1:" in log and "unreachable" in log and "secret-pw" not in log
        # A replica that starts while the database is down still starts (its models load), is not
        # ready (/health says why), and answers 503 too.
        tmp = server_dir(tmp_path_factory, "late")
        late, base = start_server(
            tmp, ready=_serving_without_its_database, DATABASE_URL=database, LLM_MAX_TOKENS="8"
        )
        assert httpx.get(f"{base}/conversations", timeout=60).status_code == 503
    finally:
        postgres.start()
    try:
        back = httpx.post(f"{a}/chat", json={"text": "And now?", "conversation_id": "down-1"}, timeout=120)
        assert back.status_code == 200, back.text
        assert httpx.get(f"{a}/health", timeout=10).json()["status"] == "ok"
        assert late is not None
        assert httpx.get(f"{base}/conversations/down-1", timeout=60).status_code == 200
    finally:
        if late is not None:
            stop_server(late)


def _serving_without_its_database(ready: httpx.Response) -> bool:
    modules = ready.json()["modules"]
    models = all(modules[name]["ready"] for name in ("stt", "chat", "tts", "vad"))
    return ready.status_code == 503 and models and "unreachable" in (modules["storage"]["error"] or "")


def test_a_malformed_database_url_stops_start_up_without_printing_the_password(tmp_path: Path) -> None:
    import sys

    from tests.server import REPO, server_env

    for url in ("mysql://user:hunter2@db/voice", "postgresql://user:hunter2@db:port/voice"):
        result = subprocess.run(
            [sys.executable, "-m", "backend.app", "--check"],
            cwd=REPO,
            env=server_env(tmp_path, 1, DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "database_url" in result.stderr and "hunter2" not in result.stderr + result.stdout
