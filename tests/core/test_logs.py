"""Structured logs and request ids, in-process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app.container import Services
from backend.app.core.logs import JsonFormatter, TextFormatter, configure_logging, request_id
from backend.app.main import create_app
from tests.conftest import make_settings


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": message, **extra})
    entry.request_id = request_id.get()
    return entry


def test_json_lines_carry_the_request_id_and_extra_fields() -> None:
    token = request_id.set("abc123")
    try:
        line = json.loads(JsonFormatter().format(record("POST /tts 200", route="/tts", status=200)))
    finally:
        request_id.reset(token)
    assert line["message"] == "POST /tts 200" and line["request_id"] == "abc123"
    assert (line["route"], line["status"], line["level"]) == ("/tts", 200, "info")
    assert line["ts"].endswith("Z")


def test_text_lines_append_fields() -> None:
    line = TextFormatter().format(record("hello", route="/x"))
    assert line.endswith('hello route="/x"')


def test_configure_logging_routes_uvicorn_through_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "faster_whisper")
    saved_loggers = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    try:
        configure_logging("info", "json")
        logging.getLogger("uvicorn.error").info("started")
        logging.getLogger("faster_whisper").info("too chatty")
        err = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["message"] for line in err] == ["started"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, level) in saved_loggers.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def client(tmp_path: Path, services: Services) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, max_upload_mb=1), services)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_request_ids_are_kept_when_plain_and_made_otherwise(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    made = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert len(made) == 32 and made != "x" * 500
    assert client.get("/nope").headers["x-request-id"]  # errors carry one too


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MB against a 1 MB limit, with no Content-Length
            yield b"\x00" * 65536

    response = client.post("/tts", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["connection"] == "close"
