"""API keys through the real app, on every transport: HTTP (our, OpenAI's and QuQu's error shapes),
Server-Sent Events, both realtime WebSockets, /metrics per key name, API_KEY alone as before, and
the logs of a run on uvicorn grepped for the keys. The key file's parsing and the quotas'
arithmetic: tests/core/test_keys.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from backend.app.container import Services
from backend.app.core.auth import ANY_KEY, is_public, rule_for
from backend.app.core.config import Settings
from backend.app.core.keys import KeyFileError
from backend.app.core.logs import JsonFormatter, TextFormatter
from backend.app.main import create_app
from tests.conftest import DATA, REPO, make_settings
from tests.server import in_thread
from tests.sse import parse_sse

SECRETS = {
    "default": "default-Qm7vT2xK9pL4",
    "kitchen": "kitchen-Zr8nW3cY6bH1",
    "dictation": "dictation-Ju5sE0aF2gV7",
    "limited": "limited-Px4dN9tR1kM6",
    "watcher": "watcher-Lh3qB8wC5yS2",
    "tablet": "tablet-Vd6kA1mX8nQ3",
}
KEY_FILE = f"""
[[keys]]
name = "kitchen"
key = "{SECRETS["kitchen"]}"
scopes = ["realtime", "conversation"]
realtime_sessions = 1

[[keys]]
name = "dictation"
key_sha256 = "{hashlib.sha256(SECRETS["dictation"].encode()).hexdigest()}"
scopes = ["stages"]
audio_seconds_per_day = 1

[[keys]]
name = "limited"
key = "{SECRETS["limited"]}"
scopes = ["conversation", "stages"]
requests_per_minute = 2

[[keys]]
name = "watcher"
key = "{SECRETS["watcher"]}"
scopes = ["metrics"]

[[keys]]
name = "tablet"
key = "{SECRETS["tablet"]}"
scopes = ["realtime"]
requests_per_minute = 1
"""

PUBLIC = "public"
EXPECTED = {
    ("GET", "/openapi.json"): ANY_KEY,
    ("GET", "/docs"): ANY_KEY,
    ("GET", "/docs/oauth2-redirect"): ANY_KEY,
    ("GET", "/redoc"): ANY_KEY,
    ("GET", "/"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): "metrics",
    ("POST", "/stt"): "stages",
    ("POST", "/optimize"): "stages",
    ("POST", "/chat"): "stages",
    ("POST", "/tts"): "stages",
    ("POST", "/conversation"): "conversation",
    ("GET", "/outputs/{name}"): "conversation",
    ("GET", "/conversations"): "conversation",
    ("GET", "/conversations/{conversation_id}"): "conversation",
    ("PATCH", "/conversations/{conversation_id}"): "conversation",
    ("DELETE", "/conversations/{conversation_id}"): "conversation",
    ("GET", "/speaker_info"): ANY_KEY,
    ("GET", "/voices"): ANY_KEY,
    ("POST", "/voices"): "voices",
    ("DELETE", "/voices/{name}"): "voices",
    ("GET", "/casts"): ANY_KEY,
    ("PUT", "/casts/{name}"): "voices",
    ("GET", "/casts/{name}"): ANY_KEY,
    ("DELETE", "/casts/{name}"): "voices",
    ("WS", "/ws/conversation"): "realtime",
    ("GET", "/api/health"): "stages",
    ("GET", "/api/status"): "stages",
    ("POST", "/api/asr/transcribe"): "stages",
    ("POST", "/api/llm/optimize"): "stages",
    ("POST", "/api/asr/transcribe-and-optimize"): "stages",
    ("GET", "/v1/models"): "stages",
    ("GET", "/v1/models/{model:path}"): "stages",
    ("POST", "/v1/audio/transcriptions"): "stages",
    ("POST", "/v1/audio/translations"): "stages",
    ("POST", "/v1/audio/speech"): "stages",
    ("POST", "/dev/captioned_speech"): "stages",
    ("GET", "/v1/audio/voices"): ANY_KEY,
    ("POST", "/v1/chat/completions"): "stages",
    ("WS", "/v1/realtime"): "realtime",
    ("WS", "/phone/twilio"): "realtime",
    ("POST", "/conversation/calls"): "realtime",
    ("DELETE", "/conversation/calls/{call_id}"): "realtime",
    ("POST", "/v1/realtime/calls"): "realtime",
    ("POST", "/v1/realtime/calls/{call_id}/hangup"): "realtime",
    ("GET", "/phone/twilio/twiml"): "realtime",
    ("POST", "/phone/twilio/twiml"): "realtime",
}
"""Every route the app has and what it needs: a route added without a decision here fails."""


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def keyed_settings(tmp: Path, **overrides: object) -> Settings:
    path = tmp / "keys.toml"
    path.write_text(KEY_FILE)
    return make_settings(tmp, api_key=SECRETS["default"], api_keys_file=path, **overrides)


@pytest.fixture
def client(services: Services, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(keyed_settings(tmp_path), services)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_route_has_a_decided_scope(client: TestClient) -> None:
    found = {}
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        methods = sorted(route.methods - {"HEAD"}) if route.methods else ["WS"]
        path = route.path or ""
        sample = re.sub(r"\{[^}]+\}", "x", path)
        for method in methods:
            found[(method, path)] = PUBLIC if is_public(sample) else rule_for(method, sample).scope
    assert found == EXPECTED


def test_http_refusals_name_the_key_the_scope_and_the_limit(client: TestClient) -> None:
    missing = client.get("/conversations")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthorized"
    assert client.get("/conversations", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200

    forbidden = client.get("/metrics", headers=auth("kitchen"))
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "error": {
            "code": "forbidden",
            "message": "key 'kitchen' lacks the scope 'metrics', which /metrics needs",
        }
    }
    openai = client.get("/v1/models", headers=auth("kitchen")).json()["error"]
    assert (openai["type"], openai["code"]) == ("permission_error", "forbidden") and "'stages'" in openai[
        "message"
    ]
    ququ = client.post("/api/llm/optimize", headers=auth("kitchen"), json={"text": "hi"})
    assert ququ.status_code == 403 and ququ.json()["success"] is False
    # The voice list is for any key; changing the library needs the `voices` scope.
    assert client.get("/voices", headers=auth("kitchen")).status_code == 200
    for method, path in (("DELETE", "/voices/Nobody"), ("PUT", "/casts/show"), ("DELETE", "/casts/show")):
        refused = client.request(method, path, headers=auth("kitchen"), json={"speakers": {"1": "Joe"}})
        assert refused.status_code == 403 and "'voices'" in refused.json()["error"]["message"]
    assert client.delete("/voices/Nobody", headers=auth("default")).status_code == 404  # past the door

    for _ in range(2):
        assert client.get("/conversations", headers=auth("limited")).status_code == 200
    limited = client.get("/conversations", headers=auth("limited"))
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.json()["error"]["message"].startswith(
        "key 'limited' is over its requests_per_minute quota of 2; retry in"
    )
    openai_limited = client.get("/v1/models", headers=auth("limited"))
    assert openai_limited.status_code == 429 and openai_limited.headers["retry-after"]
    assert openai_limited.json()["error"]["type"] == "rate_limit_error"
    assert client.get("/conversations", headers=auth("kitchen")).status_code == 200  # keys are apart


def test_api_key_alone_works_as_before(services: Services, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, api_key="s3cret"), services)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/speaker_info").status_code == 401
        for path in ("/speaker_info", "/conversations", "/metrics", "/v1/models", "/api/status"):
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200, path
        assert c.delete("/voices/Nobody", headers={"Authorization": "bearer s3cret"}).status_code == 404
        metrics = c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
        assert 'voice_dialogue_key_requests_total{key="default",outcome="ok"}' in metrics
        assert "s3cret" not in metrics
    # Without any key the server is open, and no key metrics are made.
    with TestClient(create_app(make_settings(tmp_path), services)) as open_app:
        assert open_app.get("/metrics").status_code == 200
        assert "voice_dialogue_key_requests" not in open_app.get("/metrics").text


def _key_protocol(secret: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")


def _openai_protocols(secret: str) -> list[str]:
    return ["realtime", f"openai-insecure-api-key.{secret}"]


def _own_protocols(secret: str) -> list[str]:
    return ["voice-dialogue", _key_protocol(secret)]


REALTIME: list[tuple[str, Callable[[str], list[str]], str]] = [
    ("/ws/conversation", _own_protocols, "voice-dialogue"),
    ("/v1/realtime?model=gpt-realtime", _openai_protocols, "realtime"),
]
"""Each realtime WebSocket, how a browser offers a key on it, and the subprotocol it answers."""


def _refused_handshake(client: TestClient, url: str, protocols: list[str], headers: dict[str, str]) -> int:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(url, protocols, headers=headers),
    ):
        pass
    return refused.value.code


def _wait_for_sessions(app: FastAPI, name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while app.state.keys.accounts[name].sessions != count:
        assert time.monotonic() < deadline, "the session was not released"
        time.sleep(0.01)


@pytest.mark.parametrize(("url", "offer", "answered"), REALTIME, ids=["ws-conversation", "v1-realtime"])
def test_realtime_websockets_need_a_key_the_scope_and_a_free_session(
    client: TestClient, url: str, offer: Callable[[str], list[str]], answered: str
) -> None:
    assert _refused_handshake(client, url, [answered], {}) == 1008
    assert _refused_handshake(client, url, offer(SECRETS["kitchen"].upper()), {}) == 1008
    assert _refused_handshake(client, url, offer(SECRETS["dictation"]), {}) == 1008  # no `realtime` scope
    assert _refused_handshake(client, url, [answered], auth("dictation")) == 1008

    app: FastAPI = client.app  # type: ignore[assignment]
    with client.websocket_connect(url, offer(SECRETS["kitchen"])) as first:
        assert first.accepted_subprotocol == answered
        if "v1" in url:
            assert first.receive_json()["type"] == "session.created"
        # One session at a time: the second is accepted, told why in the protocol's error event,
        # and closed with 1013 (try again later); by subprotocol or by header alike.
        for offered, headers in ((offer(SECRETS["kitchen"]), {}), ([answered], auth("kitchen"))):
            with client.websocket_connect(url, offered, headers=headers) as second:
                assert second.accepted_subprotocol == answered  # never the one carrying the key
                error, code = _error_and_close(second)
            assert code == 1013
            message = "key 'kitchen' is over its realtime_sessions quota of 1"
            if "v1" in url:
                details = error["error"]
                assert isinstance(details, dict) and details["code"] == "too_many_sessions"
                assert message in details["message"] and str(error["event_id"]).startswith("event_")
            else:
                assert error["code"] == "too_many_sessions" and message in str(error["message"])
        assert app.state.keys.accounts["kitchen"].sessions == 1
    _wait_for_sessions(app, "kitchen", 0)
    with client.websocket_connect(url, [answered], headers=auth("default")) as admin:
        assert admin.accepted_subprotocol == answered  # the default key has no session quota
        with client.websocket_connect(url, offer(SECRETS["kitchen"])) as again:
            assert again.accepted_subprotocol == answered


def test_a_handshake_over_the_keys_requests_a_minute_is_told_why_and_closed_with_1013(
    client: TestClient,
) -> None:
    with client.websocket_connect("/ws/conversation", _own_protocols(SECRETS["tablet"])) as first:
        assert first.accepted_subprotocol == "voice-dialogue"
    with client.websocket_connect("/ws/conversation", _own_protocols(SECRETS["tablet"])) as second:
        error, code = _error_and_close(second)
    assert code == 1013 and error["code"] == "rate_limited"
    assert str(error["message"]).startswith(
        "key 'tablet' is over its requests_per_minute quota of 1; retry in"
    )


def _error_and_close(ws: WebSocketTestSession) -> tuple[dict[str, object], int]:
    error = ws.receive_json()
    assert error["type"] == "error"
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return error, closed.value.code


def test_sse_and_audio_are_counted_per_key_in_metrics(client: TestClient) -> None:
    clip = {"file": ("speech.ogg", (DATA / "speech.ogg").read_bytes(), "audio/ogg")}
    refused = client.post("/stt", headers=auth("kitchen"), files=clip, data={"stream": "true"})
    assert refused.status_code == 403
    streamed = client.post("/stt", headers=auth("dictation"), files=clip, data={"stream": "true"})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text.splitlines())
    assert events[-1][0] == "done" and events[-1][1]["text"]
    # Its 3.3 s passed the 1 s a day: audio routes are refused until midnight UTC, others still answer.
    over = client.post("/stt", headers=auth("dictation"), files=clip)
    assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 86_400
    assert over.json()["error"]["code"] == "audio_quota_exceeded"
    assert "key 'dictation' is over its audio_seconds_per_day quota of 1 s" in over.json()["error"]["message"]
    speech = client.post(
        "/v1/audio/speech", headers=auth("dictation"), json={"input": "Hi.", "voice": "alloy"}
    )
    assert speech.status_code == 429 and speech.json()["error"]["type"] == "rate_limit_error"
    assert client.get("/v1/models", headers=auth("dictation")).status_code == 200
    assert client.post("/tts", headers=auth("default"), json={"text": "Hello."}).status_code == 200
    client.get("/conversations")

    metrics = client.get("/metrics", headers=auth("watcher")).text
    figures = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("voice_dialogue_key_")
    }
    requests = "voice_dialogue_key_requests_total"
    assert figures[f'{requests}{{key="dictation",outcome="ok"}}'] == 2
    assert figures[f'{requests}{{key="dictation",outcome="audio_quota_exceeded"}}'] == 2
    assert figures[f'{requests}{{key="kitchen",outcome="forbidden"}}'] == 1
    assert figures[f'{requests}{{key="<none>",outcome="unauthorized"}}'] == 1
    assert figures[f'{requests}{{key="watcher",outcome="ok"}}'] == 1
    assert 3.0 < figures['voice_dialogue_key_audio_seconds_total{key="dictation",stage="stt"}'] < 3.6
    assert figures['voice_dialogue_key_audio_seconds_total{key="default",stage="tts"}'] > 0.2
    assert figures['voice_dialogue_key_audio_seconds_total{key="kitchen",stage="stt"}'] == 0
    assert figures['voice_dialogue_key_realtime_sessions{key="kitchen"}'] == 0
    assert not any(secret in metrics for secret in SECRETS.values())


def test_a_bad_key_file_stops_start_up_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(
        f'[[keys]]\nname = "a"\nkey = "{SECRETS["kitchen"]}"\n[[keys]]\nname = "a"\nkey = "x-1"\n'
    )
    with pytest.raises(KeyFileError, match="the name 'a' is given to two keys"):
        create_app(make_settings(tmp_path, api_keys_file=path))
    path.write_text(f'[[keys]]\nname = "a"\nkey = "{SECRETS["kitchen"]}"\nscopes = ["everything"]\n')
    env = {"PATH": "/usr/bin:/bin", "API_KEYS_FILE": str(path), "DATA_DIR": str(tmp_path / "data")}
    started = subprocess.run(
        [sys.executable, "-m", "backend.app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 2
    assert f"error: API_KEYS_FILE {path}: keys[0] ('a').scopes.0: unknown scope" in started.stderr
    assert SECRETS["kitchen"] not in started.stderr + started.stdout


def test_keys_never_reach_a_log_line(
    services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run on uvicorn that uses every key on every transport, refused and admitted, with every
    logger at its most verbose: no record names a key, raw or encoded; the access lines name them."""
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.error", "backend.app", "backend.app.access"):
        caplog.set_level(5, logger=name)  # uvicorn's TRACE, below DEBUG
    app = create_app(keyed_settings(tmp_path), services)
    bodies = []
    with in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            for name in SECRETS:
                for path in ("/conversations", "/metrics", "/voices", "/v1/models", "/health"):
                    bodies.append(http.get(path, headers=auth(name)).text)
            bodies.append(
                http.get("/conversations", headers={"Authorization": f"Bearer {SECRETS['kitchen']}x"}).text
            )
            clip = {"file": ("speech.ogg", (DATA / "speech.ogg").read_bytes(), "audio/ogg")}
            with http.stream(
                "POST", "/stt", headers=auth("dictation"), files=clip, data={"stream": "true"}
            ) as sse:
                bodies.append(sse.read().decode())
            bodies.append(http.post("/stt", headers=auth("dictation"), files=clip).text)  # 429

        async def sessions() -> None:
            ws_url = base.replace("http", "ws")
            offered = ["voice-dialogue", _key_protocol(SECRETS["kitchen"])]
            async with websockets.connect(f"{ws_url}/ws/conversation", subprotocols=offered) as first:  # type: ignore[arg-type]
                openai = ["realtime", f"openai-insecure-api-key.{SECRETS['kitchen']}"]
                async with websockets.connect(f"{ws_url}/v1/realtime?model=x", subprotocols=openai) as second:  # type: ignore[arg-type]
                    bodies.append(str(await second.recv()))  # the quota's error event
                    await asyncio.wait_for(second.wait_closed(), 10)
                    assert second.close_code == 1013
                assert first.subprotocol == "voice-dialogue"
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with websockets.connect(
                    f"{ws_url}/v1/realtime?model=x", additional_headers=auth("dictation")
                ):
                    pass

        asyncio.run(sessions())
    # The clients' own debug logs (httpx, websockets.client) print what they send: not the server's.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "websockets.client"))]
    assert any(getattr(r, "key", None) == "kitchen" for r in records)  # access lines carry names
    lines = [formatter.format(r) for r in records for formatter in (JsonFormatter(), TextFormatter())]
    lines += [repr(r.__dict__) for r in records]
    forms = [form for secret in SECRETS.values() for form in (secret, _key_protocol(secret))]
    leaked = [(form, line) for form in forms for line in lines + bodies if form in line]
    assert leaked == []
    # websockets prints every handshake header at DEBUG: the key in them is redacted.
    assert any("authorization: Bearer <redacted>" in line for line in lines)
    assert any("bearer.<redacted>" in line for line in lines)
