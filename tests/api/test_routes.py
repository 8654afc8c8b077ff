"""Route behaviour that needs control over the app: overload, auth, CORS, loading, error mapping.

The happy paths and bad inputs over real HTTP are in the top-level test_api.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.app.api.deps import get_tts
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import (
    AppError,
    AudioTooLongError,
    BadRequestError,
    InvalidAudioError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    StageTimeoutError,
    TextTooLongError,
    UnsupportedMediaTypeError,
)
from backend.app.core.worker import ModelWorker
from backend.app.main import create_app
from backend.app.services.tts import TTSService
from tests.conftest import REPO, make_settings


@pytest.fixture
def app_with(services: Services, tmp_path: Path) -> Iterator[object]:
    clients: list[TestClient] = []

    def build(**overrides: object) -> TestClient:
        settings: Settings = make_settings(tmp_path, **overrides)
        test_client = TestClient(create_app(settings, services), raise_server_exceptions=False)
        clients.append(test_client)
        return test_client

    yield build
    for c in clients:
        c.close()


def test_full_tts_queue_answers_503_and_health_still_answers(services: Services, client: TestClient) -> None:
    busy = ModelWorker("tts", queue_size=0)
    tts = TTSService(
        services.tts.backend, busy, services.tts.voices, services.tts.cache, services.tts.settings
    )
    app: FastAPI = client.app  # type: ignore[assignment]
    app.dependency_overrides[get_tts] = lambda: tts
    release = threading.Event()
    # Another request holds the only slot, as a long synthesis would.
    blocker = threading.Thread(target=asyncio.run, args=(busy.run(release.wait, 10),))
    blocker.start()
    while busy.pending == 0:
        time.sleep(0.01)
    try:
        response = client.post("/tts", json={"text": "hello"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["error"]["code"] == "overloaded"
        assert client.get("/health").status_code == 200
        speech = {"model": "tts-1", "voice": "alloy", "input": "hello"}
        openai_style = client.post("/v1/audio/speech", json=speech)
        assert openai_style.status_code == 503 and openai_style.headers["retry-after"]
        assert openai_style.json()["error"]["type"] == "server_error"
        assert openai_style.json()["error"]["code"] == "overloaded"
    finally:
        release.set()
        blocker.join()
        app.dependency_overrides.clear()
        busy.shutdown()


def test_a_failing_backend_gives_json_500_and_the_server_keeps_serving(
    services: Services, client: TestClient
) -> None:
    class Broken:
        info = services.tts.backend.info
        sample_rate = 22_050
        supports_cloning = False
        supports_speed = True

        def estimate_seconds(self, text: str) -> float:
            return 1.0

        def synthesize(self, request: object) -> object:
            raise RuntimeError("engine crashed")

    tts = replace_backend(services.tts, Broken())
    app: FastAPI = client.app  # type: ignore[assignment]
    app.dependency_overrides[get_tts] = lambda: tts
    try:
        response = client.post("/tts", json={"text": "hello"})
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    finally:
        app.dependency_overrides.clear()
    assert client.post("/tts", json={"text": "hello"}).status_code == 200


def replace_backend(service: TTSService, backend: object) -> TTSService:
    return TTSService(backend, ModelWorker("tts-test", 1), service.voices, service.cache, service.settings)  # type: ignore[arg-type]


def test_api_key_guards_every_route_but_health(app_with) -> None:  # type: ignore[no-untyped-def]
    c = app_with(api_key="s3cret")
    assert c.get("/health").status_code == 200
    assert c.get("/health/ready").status_code == 200
    denied = c.get("/speaker_info")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    assert denied.json()["error"]["code"] == "unauthorized"
    assert c.get("/speaker_info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/speaker_info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.post("/chat", json={"text": "hi"}).status_code == 401


def test_openai_routes_answer_auth_and_size_errors_in_openais_shape(app_with) -> None:  # type: ignore[no-untyped-def]
    c = app_with(api_key="s3cret", max_upload_mb=0.01)
    denied = c.get("/v1/models")
    assert denied.status_code == 401
    assert denied.json() == {
        "error": {
            "message": "missing or wrong API key (Authorization: Bearer <key>)",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    auth = {"Authorization": "Bearer s3cret"}
    assert c.get("/v1/models", headers=auth).status_code == 200
    big = c.post("/v1/audio/transcriptions", headers=auth, files={"file": ("a.wav", b"0" * 200_000)})
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    # The rest of the API keeps its own shape.
    assert c.get("/speaker_info").json() == {
        "error": {"code": "unauthorized", "message": "missing or wrong API key (Authorization: Bearer <key>)"}
    }


def test_cors_preflight_and_headers(app_with) -> None:  # type: ignore[no-untyped-def]
    c = app_with(cors_origins="http://app.example", api_key="k")
    preflight = c.options(
        "/tts",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    response = c.get("/health", headers={"Origin": "http://app.example"})
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    other = c.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_declared_oversize_body_is_refused_before_reading(app_with) -> None:  # type: ignore[no-untyped-def]
    c = app_with(max_upload_mb=0.01)
    response = c.post("/stt", files={"file": ("a.wav", b"\x00" * 200_000, "audio/wav")})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_while_loading_routes_answer_503_and_health_says_loading(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))  # no lifespan run: services are not built
    c = TestClient(app, raise_server_exceptions=False)
    health = c.get("/health").json()
    assert health["status"] == "loading"
    assert not any(m["ready"] for m in health["modules"].values())
    assert c.get("/health/ready").status_code == 503
    response = c.post("/chat", json={"text": "hi"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequestError("x"), 400),
        (NotFoundError("x"), 404),
        (PayloadTooLargeError("x"), 413),
        (UnsupportedMediaTypeError("x"), 415),
        (InvalidAudioError("x"), 422),
        (OverloadedError("x"), 503),
        (StageTimeoutError("tts", 30), 504),
        (TextTooLongError("x"), 413),
        (AudioTooLongError("x"), 422),
    ],
)
def test_domain_errors_map_to_status_and_shape(tmp_path: Path, error: AppError, status: int) -> None:
    app = create_app(make_settings(tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise error

    response = TestClient(app).get("/boom")
    assert response.status_code == status
    assert response.json() == {"error": {"code": error.code, "message": error.message}}


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/tts")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for route in (
        "/health",
        "/health/ready",
        "/stt",
        "/chat",
        "/tts",
        "/conversation",
        "/speaker_info",
        "/outputs/{name}",
    ):
        assert route in paths


def test_a_full_disk_refuses_what_stores_with_507_serves_the_rest_and_health_says_so(
    services: Services, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MIN_FREE_DISK_MB above what the disk has: as a full disk looks to the server."""
    huge = 1 << 60
    monkeypatch.setattr(services.history.store, "min_free_bytes", huge)
    monkeypatch.setattr(services.history.outputs, "min_free_bytes", huge)
    flac = (REPO / "tests" / "data" / "speech.flac").read_bytes()
    turns_before = services.history.store.page(1, 0)[1]
    for response in (
        client.post("/chat", json={"text": "hello"}),
        client.post("/chat", json={"text": "hello", "stream": True}),
        client.post("/conversation", files={"audio_file": ("s.flac", flac, "audio/flac")}),
        client.post(
            "/conversation", files={"audio_file": ("s.flac", flac, "audio/flac")}, data={"stream": "true"}
        ),
    ):
        assert response.status_code == 507, response.text
        assert response.json()["error"]["code"] == "insufficient_storage"
        assert "MIN_FREE_DISK_MB" in response.json()["error"]["message"]
    assert services.history.store.page(1, 0)[1] == turns_before  # nothing half-stored
    assert client.post("/stt", files={"file": ("s.flac", flac, "audio/flac")}).status_code == 200
    assert client.post("/tts", json={"text": "Still speaking."}).status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "degraded" and "MB free" in health["error"], health
    assert health["modules"]["storage"]["ready"] is False
    assert client.get("/health/ready").status_code == 503
    monkeypatch.undo()
    assert client.get("/health").json()["status"] == "ok"


def test_a_recording_is_never_refused_for_the_length_of_what_was_said(
    services: Services, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_TTS_CHARS bounds typed text; a transcript longer than it is still answered."""
    monkeypatch.setattr(services.chat, "max_chars", 20)
    flac = (REPO / "tests" / "data" / "speech.flac").read_bytes()
    response = client.post("/conversation", files={"audio_file": ("s.flac", flac, "audio/flac")})
    assert response.status_code == 200, response.text
    assert len(response.json()["transcript"]) > 20 and response.json()["reply"]
    assert client.post("/chat", json={"text": "x" * 21}).status_code == 413  # typed text is bounded
