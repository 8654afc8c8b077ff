"""A PostgreSQL server that goes away while the app runs, with no request to trip over it: /health
says so within seconds, the outage is logged once when it begins and once when it ends (the
retention sweep, running every fraction of a second meanwhile, adds no line and no traceback), and
the password in DATABASE_URL shows in no log record, /health body or error."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app.container import Services
from backend.app.main import create_app
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import DatabaseOutputs
from backend.app.storage.postgres import PostgresStore
from backend.app.storage.postgres_address import redacted
from tests.conftest import make_settings
from tests.postgres import PostgresServer

PASSWORD = "secret-pw"  # tests/postgres.py's
SEEN_WITHIN_S = 10.0


def _health_until(client: TestClient, status: str, bodies: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        response = client.get("/health")
        bodies.append(response.text)
        body: dict[str, Any] = response.json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"/health still says {body} after {SEEN_WITHIN_S:g} s"
        time.sleep(0.2)


@contextmanager
def _app_on_database(
    postgres: PostgresServer, services: Services, tmp_path: Path, sweep_s: float
) -> Iterator[tuple[TestClient, PostgresStore]]:
    """The app on the shared models, its conversations and reply audio in a new PostgreSQL
    database; a request gives up on the pool after 1 s, and the sweep runs every `sweep_s`."""
    url = postgres.new_database()
    assert PASSWORD in url
    store = PostgresStore(url, timeout_s=1.0)
    history = ConversationHistory(store, DatabaseOutputs(store, 1.0, 64), services.history.voices)
    settings = make_settings(tmp_path, outputs_sweep_s=sweep_s)
    app = create_app(settings, dataclasses.replace(services, history=history))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/conversations").status_code == 200  # the schema is in place
            yield client, store
    finally:
        store.close()


def test_health_sees_a_database_outage_without_a_request_failing_first(
    postgres: PostgresServer, services: Services, tmp_path: Path
) -> None:
    bodies: list[str] = []
    # The sweep ran once at start-up and waits 300 s: nothing but /health touches the database.
    with _app_on_database(postgres, services, tmp_path, sweep_s=300) as (client, store):
        _health_until(client, "ok", bodies)
        postgres.crash()
        try:
            health = _health_until(client, "degraded", bodies)
            storage = health["modules"]["storage"]
            assert (
                not storage["ready"] and "unreachable" in storage["error"] and "127.0.0.1" in storage["error"]
            )
            assert health["error"] == storage["error"]
            assert storage["device"] == redacted(store.url) and ":***@" in storage["device"]
        finally:
            postgres.start()
        _health_until(client, "ok", bodies)
    assert not [body for body in bodies if PASSWORD in body]


def test_an_outage_is_logged_once_and_back_once_and_never_shows_the_password(
    postgres: PostgresServer, services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bodies: list[str] = []
    caplog.set_level(logging.DEBUG)
    with _app_on_database(postgres, services, tmp_path, sweep_s=0.2) as (client, _):
        postgres.crash()
        try:
            _health_until(client, "degraded", bodies)
            time.sleep(3)  # the sweep keeps running (and failing) meanwhile, every 0.2 s
            refused = client.get("/conversations")
            bodies.append(refused.text)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_unavailable"
        finally:
            postgres.start()
        _health_until(client, "ok", bodies)
        assert client.get("/conversations").status_code == 200
        time.sleep(0.5)  # a sweep or two after the return

    # What an operator reads (INFO and up), from the app and its database driver.
    records = [
        r for r in caplog.records if r.name.startswith(("backend", "psycopg")) and r.levelno >= logging.INFO
    ]
    down = [r for r in records if "unreachable" in r.getMessage()]
    back = [r for r in records if "reachable again" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.ERROR, [r.getMessage() for r in down]
    assert "127.0.0.1" in down[0].getMessage() and ":***@" in down[0].getMessage()
    assert len(back) == 1, [r.getMessage() for r in back]
    assert not [r.getMessage() for r in records if r.exc_info], "a traceback was logged"
    assert not [r.getMessage() for r in records if "sweep" in r.getMessage()]
    assert not [r for r in caplog.records if PASSWORD in logging.Formatter().format(r)]
    assert not [body for body in bodies if PASSWORD in body]


def test_a_database_that_stops_answering_is_reported_within_the_ping_timeout() -> None:
    """A server that accepts connections but never answers (here: a listening socket nobody
    reads) makes `ping` give up after its timeout, and say so."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    store = PostgresStore(
        f"postgresql://voice:{PASSWORD}@127.0.0.1:{port}/voice", timeout_s=1.0, ping_timeout_s=0.5
    )
    try:
        began = time.monotonic()
        store.ping()
        assert time.monotonic() - began < 1.5
        assert store.problem is not None and "no answer within 0.5 s" in store.problem
        assert PASSWORD not in store.problem
    finally:
        store.close()
        listener.close()
