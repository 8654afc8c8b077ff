"""Hostile input at the HTTP boundary, on the app with the real models: deep JSON, unpaired
surrogates in every text field, audio headers with boundary values on every audio route, the
generic 500 (logged with the request id, the connection kept), auth scheme case, HEAD /health."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from backend.app.audio.decode import decode_audio
from backend.app.container import Services
from backend.app.core.errors import AppError
from backend.app.core.json_guard import MAX_JSON_DEPTH, json_depth
from backend.app.main import create_app
from tests.conftest import make_settings
from tests.hostile_audio import CASES
from tests.server import in_thread

SURROGATE = "\ud800"

# (path, body builder): every JSON text field of every route.
TEXT_FIELDS = [
    ("/tts", lambda t: {"text": t}),
    ("/tts", lambda t: {"text": "Hello.", "voice": t}),
    ("/tts", lambda t: {"text": "Hello.", "speaker_voice_path": t}),
    ("/chat", lambda t: {"text": t}),
    ("/chat", lambda t: {"text": "Hi.", "conversation_id": t}),
    ("/optimize", lambda t: {"text": t}),
    ("/optimize", lambda t: {"text": "um hello", "mode": "custom", "custom_prompt": t}),
    ("/v1/audio/speech", lambda t: {"model": "tts-1", "voice": "alloy", "input": t}),
    ("/v1/audio/speech", lambda t: {"model": t, "voice": "alloy", "input": "Hi."}),
    (
        "/v1/chat/completions",
        lambda t: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t}]},
    ),
    (
        "/v1/chat/completions",
        lambda t: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stop": [t]},
    ),
]


def post_json(client: TestClient, path: str, raw: str) -> tuple[int, dict[str, object]]:
    response = client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    return response.status_code, response.json()


@pytest.mark.parametrize(("path", "build"), TEXT_FIELDS)
def test_an_unpaired_surrogate_in_any_text_field_is_a_4xx_naming_it(
    client: TestClient, path: str, build
) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps(build(SURROGATE))  # ensure_ascii: the escape \ud800, valid JSON
    status, body = post_json(client, path, raw)
    assert status in (400, 422), body
    error = body["error"]
    assert isinstance(error, dict) and "surrogate" in str(error["message"])
    field = next(k for k, v in build(SURROGATE).items() if SURROGATE in json.dumps(v, ensure_ascii=False))
    assert field in str(error["message"])


def test_a_surrogate_in_a_key_and_a_lone_low_surrogate_are_refused(client: TestClient) -> None:
    assert post_json(client, "/tts", '{"text": "Hi.", "\\udfff": 1}')[0] == 422
    assert post_json(client, "/chat", '{"text": "a\\udc00b"}')[0] == 422
    # A pair is a character, not an error.
    paired = client.post(
        "/tts", content=b'{"text": "Hello \\ud83d\\ude00."}', headers={"content-type": "application/json"}
    )
    assert paired.status_code == 200


@pytest.mark.parametrize("path", ["/chat", "/tts", "/optimize", "/v1/chat/completions", "/v1/audio/speech"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_ten_thousand_deep_is_a_4xx(client: TestClient, path: str, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    status, body = post_json(client, path, opener * 10_000 + "1" + closer * 10_000)
    assert status in (400, 422), body
    assert "nested deeper" in str(body["error"])


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


def test_invalid_utf8_json_is_a_4xx(client: TestClient) -> None:
    for path in ("/tts", "/chat", "/v1/chat/completions"):
        response = client.post(
            path, content=b'{"text": "\xff\xfe"}', headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text


def _refused(data: bytes) -> bool:
    try:
        decode_audio(data, 16_000, 60)
    except AppError:
        return True
    return False


# One case of each field: every route sees every kind of bad header without 2,000 requests. The
# routes that transcribe get the files the decoder refuses (the error path; the files that decode
# are ordinary speech there, sent to the live server by the fuzz stage), /voices one of each field.
ONE_PER_FIELD = list({label.rsplit("=", 1)[0]: (label, data) for label, data in CASES}.values())
REFUSED = [(label, data) for label, data in CASES if _refused(data)]
AUDIO_ROUTES = [
    ("/stt", "file", {}, REFUSED),
    ("/voices", "file", {"name": "Hostile", "language": "en", "gender": "man"}, ONE_PER_FIELD),
    ("/conversation", "audio_file", {}, REFUSED),
    ("/v1/audio/transcriptions", "file", {"model": "whisper-1"}, REFUSED),
]


@pytest.mark.parametrize(("route", "field", "form", "cases"), AUDIO_ROUTES, ids=[r[0] for r in AUDIO_ROUTES])
def test_every_audio_route_answers_every_header_field_below_500(
    client: TestClient, route: str, field: str, form: dict[str, str], cases: list[tuple[str, bytes]]
) -> None:
    for label, data in cases:
        response = client.post(route, files={field: ("a.bin", data, "application/octet-stream")}, data=form)
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:200]}"
        if route == "/voices" and response.status_code == 201:
            client.delete("/voices/Hostile")


def test_auth_scheme_is_case_insensitive(tmp_path: Path, services: Services) -> None:
    app = create_app(make_settings(tmp_path, api_key="s3cret"), services)
    with TestClient(app) as c:
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert c.get("/speaker_info", headers={"Authorization": f"{scheme} s3cret"}).status_code == 200
        assert c.get("/speaker_info", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.get("/speaker_info", headers={"Authorization": "bearer wrong"}).status_code == 401


def test_head_health(client: TestClient) -> None:
    for path in ("/health", "/health/ready"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b""


# --- the generic 500, on a real server ------------------------------------------------------


@pytest.fixture
def crashing_server(tmp_path: Path, services: Services) -> Iterator[tuple[int, FastAPI]]:
    """uvicorn in a thread over an app with one route that fails as no route should."""
    app = create_app(make_settings(tmp_path), services)
    boom = APIRouter()

    @boom.get("/boom")
    async def _boom() -> None:
        raise RuntimeError("a bug, not the client's fault")

    app.include_router(boom)
    with in_thread(app) as port:
        yield port, app


def test_a_500_is_logged_with_its_request_id_and_keeps_the_connection(
    crashing_server: tuple[int, FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = crashing_server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with caplog.at_level(logging.ERROR, logger="backend.app.errors"):
        connection.request("GET", "/boom", headers={"X-Request-ID": "crash-1"})
        crashed = connection.getresponse()
        body = json.loads(crashed.read())
        sock = connection.sock
    assert crashed.status == 500 and body == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert "a bug" not in json.dumps(body)  # the client never sees the exception
    records = [r for r in caplog.records if r.name == "backend.app.errors"]
    assert len(records) == 1 and "GET /boom (request crash-1)" in records[0].getMessage()
    assert records[0].exc_info and "a bug" in str(records[0].exc_info[1])
    # The same connection answers the next request.
    connection.request("GET", "/health")
    following = connection.getresponse()
    assert following.status == 200 and json.loads(following.read())["status"] == "ok"
    assert connection.sock is sock, "the server closed the connection after the 500"
    connection.close()
