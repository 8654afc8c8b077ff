"""QuQu's backend API (/api/...), on the real embedded models, each route's response fields checked
against docs/compat.md, and every bad request answered in QuQu's error shape, never a 500."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from backend.app.text.wer import word_error_rate
from tests.conftest import REPO, SENTENCE, clip

COMPAT = (REPO / "docs" / "compat.md").read_text()
JSON = {"content-type": "application/json"}


def documented(route: str, table: str = "Response") -> set[str]:
    """The field names of a route's table in docs/compat.md (its `Response:` or `Request` table)."""
    section = COMPAT.split(f"### `{route}`", 1)[1].split("\n### ", 1)[0]
    part = section.split(table, 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \|", part.split("\n\n", 2)[1], re.M)
    assert rows, f"no {table} table for {route}"
    return set(rows)


def assert_error(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert set(body) == {"success", "error", "code"}
    return body  # type: ignore[no-any-return]


def test_health_and_status(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "healthy" and set(health) == documented("GET /api/health")
    status = client.get("/api/status").json()
    assert set(status) == documented("GET /api/status")
    assert status["success"] and status["funasr"]["initialized"] and status["ollama"]["available"]
    assert status["gpu_available"] is False


def test_transcribe_returns_ququs_fields(client: TestClient) -> None:
    response = client.post("/api/asr/transcribe", files={"audio": ("speech.wav", clip("speech.wav"))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == documented("POST /api/asr/transcribe")
    assert body["success"] and word_error_rate(SENTENCE, body["text"]) <= 0.2, body["text"]
    assert re.search(r"[.,!?]", body["text"]) and not re.search(r"[.,!?;:]", body["raw_text"])
    assert 0 < body["confidence"] <= 1 and body["duration"] > 1 and body["language"] == "en"
    before = client.get("/api/status").json()["performance_stats"]["transcription_count"]
    unpunctuated = client.post(
        "/api/asr/transcribe",
        files={"audio": ("speech.mp3", clip("speech.mp3"))},
        data={"use_punc": "false", "use_vad": "false", "hotword": "quiet fox"},
    ).json()
    assert unpunctuated["text"] == unpunctuated["raw_text"]
    assert word_error_rate(SENTENCE, unpunctuated["raw_text"]) <= 0.2
    assert client.get("/api/status").json()["performance_stats"]["transcription_count"] == before + 1


def test_optimize_returns_ququs_fields(client: TestClient) -> None:
    text = "um so I think we should uh meet tomorrow at ten"
    body = client.post("/api/llm/optimize", json={"text": text, "mode": "punctuate"}).json()
    assert set(body) == documented("POST /api/llm/optimize")
    assert body["success"] and body["original_text"] == text and body["mode"] == "punctuate"
    assert body["optimized_text"] and body["model"]
    custom = client.post(
        "/api/llm/optimize", json={"text": text, "mode": "custom", "custom_prompt": "Write it in capitals."}
    )
    assert custom.status_code == 200 and custom.json()["optimized_text"]


def test_transcribe_and_optimize_returns_ququs_fields(client: TestClient) -> None:
    files = {"audio": ("speech.flac", clip("speech.flac"))}
    body = client.post(
        "/api/asr/transcribe-and-optimize", files=files, data={"optimize_mode": "punctuate"}
    ).json()
    assert set(body) == documented("POST /api/asr/transcribe-and-optimize")
    assert body["success"] and body["optimize_mode"] == "punctuate"
    assert word_error_rate(SENTENCE, body["original_text"]) <= 0.2
    assert body["recognized_text"] == body["original_text"] == body["asr_result"]["text"]
    assert body["text"] == body["optimized_text"] and body["duration"] > 1
    skipped = client.post(
        "/api/asr/transcribe-and-optimize", files=files, data={"optimize_mode": "none"}
    ).json()
    assert skipped["optimized_text"] == skipped["original_text"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/api/asr/transcribe", {"data": {"use_vad": "true"}, "files": {"x": ("a", b"1")}}, 422),
        ("post", "/api/asr/transcribe", {"files": {"audio": ("a.wav", b"not audio at all")}}, 422),
        ("post", "/api/asr/transcribe", {"json": {"audio": "base64?"}}, 415),
        ("post", "/api/asr/transcribe", {"files": {"audio": ("a.wav", clip("speech.wav"))},
                                          "data": {"use_vad": "sometimes"}}, 422),
        ("post", "/api/asr/transcribe", {"files": {"audio": ("a.wav", clip("speech.wav"))},
                                          "data": {"hotword": "x" * 1001}}, 422),
        ("post", "/api/llm/optimize", {"json": {"text": "hi", "mode": "custom"}}, 422),
        ("post", "/api/llm/optimize", {"json": {"text": "hi", "mode": "rewrite"}}, 422),
        ("post", "/api/llm/optimize", {"json": {"mode": "optimize"}}, 422),
        ("post", "/api/llm/optimize", {"content": b"{not json", "headers": JSON}, 422),
        ("post", "/api/llm/optimize", {"data": {"text": "hi"}}, 415),
        ("post", "/api/asr/transcribe-and-optimize", {"files": {"audio": ("a.wav", clip("speech.wav"))},
                                                       "data": {"optimize_mode": "dance"}}, 422),
        ("get", "/api/nothing-here", {}, 404),
        ("get", "/api/asr/transcribe", {}, 405),
    ],
)  # fmt: skip
def test_bad_requests_get_ququs_error_shape(
    client: TestClient, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    assert_error(getattr(client, method)(path, **kwargs), status)
