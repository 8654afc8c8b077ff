"""A pass/fail line per route against a server that is already running: what `python test_api.py`
does when it is run as a script (`--url` to point elsewhere than localhost:8000), as the backend this
server replaces told its users to check a deployment. Under pytest, test_api.py starts its own
server and also runs these checks against it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

DATA = Path(__file__).parent / "data"
SENTENCE = (DATA / "SENTENCE.txt").read_text().strip()


@dataclass
class Outcome:
    route: str
    passed: bool
    ms: float
    detail: str


def _wer(reference: str, heard: str) -> float:
    from backend.app.text.wer import word_error_rate

    return word_error_rate(reference, heard)


def checks(http: httpx.Client) -> list[tuple[str, Callable[[], str]]]:
    """(route, check) pairs, in order; a check returns a short detail or raises AssertionError."""
    speech = (DATA / "speech.wav").read_bytes()
    state: dict[str, str] = {}

    def ok(response: httpx.Response, status: int = 200) -> httpx.Response:
        assert response.status_code == status, f"HTTP {response.status_code}: {response.text[:200]}"
        return response

    def health() -> str:
        body = ok(http.get("/health")).json()
        assert body["status"] == "ok", f"status {body['status']}"
        return ", ".join(f"{name} {m['model']}" for name, m in body["modules"].items() if m.get("model"))

    def speaker_info() -> str:
        body = ok(http.get("/speaker_info")).json()
        return f"{len(body['voices'])} voices, default {body['default_voice']}"

    def voices() -> str:
        return f"{len(ok(http.get('/voices')).json()['voices'])} voices"

    def stt() -> str:
        body = ok(http.post("/stt", files={"file": ("speech.wav", speech, "audio/wav")})).json()
        assert _wer(SENTENCE, body["text"]) <= 0.3, f"heard {body['text']!r}"
        return repr(body["text"])

    def optimize() -> str:
        body = ok(
            http.post("/optimize", json={"text": "um so the the meeting is at ten", "mode": "optimize"})
        ).json()
        return repr(body["optimized_text"])

    def chat() -> str:
        body = ok(http.post("/chat", json={"text": "Say hello in three words."})).json()
        assert body["reply"].strip(), "an empty reply"
        state["conversation"] = body["conversation_id"]
        return repr(body["reply"])

    def tts() -> str:
        response = ok(http.post("/tts", json={"text": "The server is working.", "format": "wav"}))
        assert response.headers["content-type"].startswith("audio/wav"), response.headers["content-type"]
        return f"{len(response.content)} bytes, {response.headers.get('X-Segments')} segment(s)"

    def conversation() -> str:
        body = ok(
            http.post("/conversation", files={"audio_file": ("speech.wav", speech, "audio/wav")})
        ).json()
        audio = ok(http.get(body["audio_url"]))
        state["conversation"] = body["conversation_id"]
        return (
            f"heard {body['transcript']!r}, replied {body['reply']!r} ({len(audio.content)} bytes of audio)"
        )

    def conversations() -> str:
        body = ok(http.get("/conversations")).json()
        return f"{body['total']} conversations"

    def one_conversation() -> str:
        body = ok(http.get(f"/conversations/{state['conversation']}")).json()
        return f"{len(body['turns'])} turns"

    def metrics() -> str:
        text = ok(http.get("/metrics")).text
        assert "voice_dialogue_stage_duration_seconds" in text, "no stage metrics"
        return f"{len(text.splitlines())} lines"

    def models() -> str:
        return ", ".join(m["id"] for m in ok(http.get("/v1/models")).json()["data"])

    return [
        ("GET /health", health),
        ("GET /speaker_info", speaker_info),
        ("GET /voices", voices),
        ("POST /stt", stt),
        ("POST /optimize", optimize),
        ("POST /chat", chat),
        ("POST /tts", tts),
        ("POST /conversation", conversation),
        ("GET /conversations", conversations),
        ("GET /conversations/{id}", one_conversation),
        ("GET /metrics", metrics),
        ("GET /v1/models", models),
    ]


def run(url: str, api_key: str | None = None) -> list[Outcome]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    outcomes = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=300, headers=headers) as http:
        for route, check in checks(http):
            began = time.perf_counter()
            try:
                detail, passed = check(), True
            except (AssertionError, KeyError, httpx.HTTPError, ValueError) as e:
                detail, passed = f"{type(e).__name__}: {e}", False
            outcomes.append(Outcome(route, passed, (time.perf_counter() - began) * 1000, detail))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python test_api.py",
        description="Check every route of a running voice server; one PASS/FAIL line each. "
        "Under pytest (make test) the same file starts a server of its own.",
    )
    parser.add_argument(
        "--url", default="http://localhost:8000", help="the server (default http://localhost:8000)"
    )
    parser.add_argument("--api-key", default=None, help="the server's API_KEY, when it has one")
    args = parser.parse_args(argv)
    try:
        httpx.get(f"{args.url.rstrip('/')}/health", timeout=5)
    except httpx.HTTPError as e:
        print(f"cannot reach {args.url}: {e}. Start the server first (make run), or pass --url.")
        return 2
    outcomes = run(args.url, args.api_key)
    for o in outcomes:
        print(f"{'PASS' if o.passed else 'FAIL'}  {o.route:<26} {o.ms:8.0f} ms  {o.detail[:140]}")
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed")
    return 1 if failed else 0
