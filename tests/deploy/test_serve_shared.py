"""Ray Serve with two ingress replicas on one real PostgreSQL database (`ingress_replicas: 2`,
DATABASE_URL in the config's `env`), started with `serve run` as a user starts it: a conversation's
turns, routed by Serve's proxy to either replica, form one history, and every reply's audio_url is
served whichever replica answers the GET."""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.app.audio.decode import decode_audio
from bench.serve import launch_serve, local_config, stop_serve
from tests.conftest import DATA
from tests.ports import free_port
from tests.postgres import PostgresServer
from tests.server import server_dir, server_settings, wait_ready

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (requirements-serve.txt)")


@pytest.fixture(scope="module")
def shared_serve(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[tuple[str, Path]]:
    root = server_dir(tmp_path_factory, "serve-shared")
    port = free_port()
    settings = server_settings(
        root, DATABASE_URL=postgres.new_database(), LOG_FORMAT="text", LLM_MAX_TOKENS="12"
    )
    config = local_config(root, port, ingress=2, **settings)
    log_path = root / "serve.log"
    process = launch_serve(config, log_path)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log_path, 300)
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        stop_serve(process)


def test_two_ingress_replicas_keep_one_history_and_serve_every_reply(shared_serve: tuple[str, Path]) -> None:
    base, log_path = shared_serve
    clip = (DATA / "speech.wav").read_bytes()
    urls = []
    conversation = None
    with httpx.Client(base_url=base, timeout=180) as http:
        for _ in range(3):
            form = {"conversation_id": conversation} if conversation else {}
            turn = http.post("/conversation", files={"audio_file": ("speech.wav", clip)}, data=form)
            assert turn.status_code == 200, turn.text
            conversation = turn.json()["conversation_id"]
            urls.append(turn.json()["audio_url"])
            chat = http.post("/chat", json={"text": "And one more thing.", "conversation_id": conversation})
            assert chat.status_code == 200, chat.text
        for _ in range(4):  # each GET lands on either replica
            stored = http.get(f"/conversations/{conversation}").json()["turns"]
            assert [t["role"] for t in stored] == ["user", "assistant"] * 6
            for url in urls:
                audio = http.get(url)
                assert audio.status_code == 200, url
        assert decode_audio(audio.content).duration > 0.3

        # Bursts at once: Serve's router spreads concurrent requests over the ingress replicas it knows
        # to be running. Both ingress replicas answer some of them; each logs its own under its pid
        # (our access lines and Serve's request lines). Ray's log monitor copies worker logs to the
        # driver's output a moment later, and on a loaded machine the second replica may still be
        # starting when the first answers /health, so bursts go on until both pids appear or a
        # deadline passes.
        def fetch(i: int) -> int:
            path = urls[i % len(urls)] if i % 2 else f"/conversations/{conversation}"
            return httpx.get(f"{base}{path}", timeout=60).status_code

        line = re.compile(
            r"ServeReplica:voice:ingress pid=(\d+)\)[^\n]*(?:backend\.app\.access| -- (?:GET|POST) )"
        )
        deadline = time.monotonic() + 90
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while True:
                assert set(pool.map(fetch, range(32))) == {200}
                time.sleep(1)
                served = set(line.findall(log_path.read_text()))
                if len(served) >= 2 or time.monotonic() > deadline:
                    break
    started = set(re.findall(r"ServeReplica:voice:ingress pid=(\d+)\)", log_path.read_text()))
    assert len(served) == 2, (started, log_path.read_text()[-3000:])
