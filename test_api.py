"""End-to-end: start the real server (`python -m backend.app` on a free localhost port), drive every
route over HTTP on the real embedded models, and stop it.

Run with `make test` (or `.venv/bin/python -m pytest test_api.py`). Run as a script,
`python test_api.py [--url http://host:8000]`, it checks a server that is already running instead:
a PASS/FAIL line per route (tests/smoke.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from backend.app.audio.decode import decode_audio
from backend.app.storage.conversations import ConversationStore
from backend.app.text.wer import word_error_rate
from tests.conftest import SYNTH_WER
from tests.ports import free_port
from tests.server import server_dir, server_env, start_server, stop_server
from tests.sse import TURN_TIMINGS, parse_sse

REPO = Path(__file__).parent
DATA = REPO / "tests" / "data"
SENTENCE = (DATA / "SENTENCE.txt").read_text().strip()
FORMATS = {
    "speech.wav": "audio/wav",
    "speech.mp3": "audio/mpeg",
    "speech.flac": "audio/flac",
    "speech.ogg": "audio/ogg",
    "speech.webm": "audio/webm",
    "speech.m4a": "audio/mp4",
    "speech.mp4": "video/mp4",
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = server_dir(tmp_path_factory, "e2e")
    voices = root / "voices"
    (root / "secret.wav").write_bytes((REPO / "voices" / "en-Joe_man.wav").read_bytes())
    os.symlink(root / "secret.wav", voices / "en-Link_man.wav")  # points outside VOICES_DIR
    return root


WYOMING_PORT = free_port()
"""The e2e server's Wyoming endpoint (WYOMING_URI), beside its HTTP port."""


@pytest.fixture(scope="module")
def server(tmp: Path) -> Iterator[str]:
    # The product's default LLM (LLM_MODEL empty: the embedded Qwen2.5-Coder-1.5B), where the unit
    # tests take the small one.
    process, base = start_server(tmp, LLM_MODEL="", WYOMING_URI=f"tcp://127.0.0.1:{WYOMING_PORT}")
    try:
        yield base
        # Whatever the tests sent, the server is still up and healthy.
        assert process.poll() is None, "the server died during the tests"
        assert httpx.get(f"{base}/health", timeout=5).json()["status"] == "ok"
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def clip(name: str) -> bytes:
    return (DATA / name).read_bytes()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, str] = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


# --- health and voices -------------------------------------------------------------------------


def test_health_reports_every_module(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok"
    assert set(body["modules"]) == {"stt", "chat", "tts", "vad", "storage"}
    for module in body["modules"].values():
        assert module["ready"] is True and module["model"] and module["device"]
    assert http.get("/health/ready").status_code == 200


def test_page_and_its_files_are_served(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    links = re.findall(r'"(/static/[a-z0-9.-]+\?v=[0-9a-f]{16})"', page.text)
    assert len(links) >= 3
    for link in links:
        asset = http.get(link)
        assert asset.status_code == 200, link
        assert "immutable" in asset.headers["cache-control"]
    assert http.get("/static/pcm-worklet.js").status_code == 200  # loaded by URL from app.js
    assert_error(http.get("/static/..%2Fmain.py"), 404)


def test_speaker_info_lists_parsed_voices(http: httpx.Client) -> None:
    body = http.get("/speaker_info").json()
    # The embedded voices, listed after the library, as engine voices.
    engine = [
        (v["file"], v["gender"], v["deletable"]) for v in body["voices"] if v["file"].startswith("piper:")
    ]
    assert engine == [("piper:heart", "woman", False), ("piper:joe", "man", False)]
    assert [v for v in body["voices"] if not v["file"].startswith("piper:")] == [
        {
            "file": "en-Joe_man.wav",
            "name": "Joe",
            "language": "en",
            "gender": "man",
            "duration": 5.85,
            "sample_rate": 22_050,
            "deletable": True,
        }
    ]
    assert body["default_voice"] == "en-Joe_man.wav"
    assert body["supports_cloning"] is False
    assert set(body["cache"]) == {"size", "capacity", "hits", "misses", "evictions"}
    assert body["cache"]["capacity"] == 50


def library_files(listed: dict[str, Any]) -> list[str]:
    """The library's voice files in a /voices listing (the engine's own `piper:` voices left out)."""
    return [v["file"] for v in listed["voices"] if not v["file"].startswith("piper:")]


def test_voice_library_add_list_delete(http: httpx.Client) -> None:
    clip_bytes = clip("speech.m4a")  # 3.3 s of speech
    created = http.post(
        "/voices",
        files={"file": ("mine.m4a", clip_bytes, "audio/mp4")},
        data={"name": "Mei", "language": "zh", "gender": "woman"},
    )
    assert created.status_code == 201, created.text
    # Stored at the TTS engine's rate (the embedded voices' 24 kHz), whatever the upload's (44.1 kHz AAC).
    assert created.json()["file"] == "zh-Mei_woman.wav" and created.json()["sample_rate"] == 24_000
    listed = http.get("/voices").json()
    assert library_files(listed) == ["en-Joe_man.wav", "zh-Mei_woman.wav"]
    assert listed["default_voice"] == "en-Joe_man.wav"
    assert http.post("/tts", json={"text": "Hi.", "voice": "Mei"}).status_code == 200
    again = http.post(
        "/voices",
        files={"file": ("mine.m4a", clip_bytes, "audio/mp4")},
        data={"name": "mei", "language": "zh", "gender": "woman"},
    )
    assert_error(again, 409, "conflict")
    removed = http.delete("/voices/Mei")
    assert removed.status_code == 200 and removed.json()["file"] == "zh-Mei_woman.wav"
    assert_error(http.delete("/voices/Mei"), 404)
    assert library_files(http.get("/voices").json()) == ["en-Joe_man.wav"]


@pytest.mark.parametrize(
    ("files", "data", "status"),
    [
        (
            {"file": ("s.wav", clip("silence.wav"), "audio/wav")},
            {"name": "Al", "language": "en", "gender": "man"},
            422,
        ),
        (
            {"file": ("x.wav", b"garbage", "audio/wav")},
            {"name": "Al", "language": "en", "gender": "man"},
            422,
        ),
        (
            {"file": ("s.m4a", clip("speech.m4a"), "audio/mp4")},
            {"name": "../../x", "language": "en", "gender": "man"},
            422,
        ),
        ({"file": ("s.m4a", clip("speech.m4a"), "audio/mp4")}, {"name": "Al", "language": "en"}, 422),
        (
            {"other": ("s.m4a", clip("speech.m4a"), "audio/mp4")},
            {"name": "Al", "language": "en", "gender": "man"},
            422,
        ),
    ],
    ids=["too-short", "undecodable", "unsafe-name", "missing-gender", "missing-file"],
)
def test_voice_upload_bad_input(
    http: httpx.Client, files: dict[str, object], data: dict[str, str], status: int, tmp: Path
) -> None:
    assert_error(http.post("/voices", files=files, data=data), status)  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp / "voices").iterdir()) == ["en-Joe_man.wav", "en-Link_man.wav"]


# --- STT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FORMATS))
def test_stt_transcribes_every_recorded_format(http: httpx.Client, name: str) -> None:
    response = http.post("/stt", files={"file": (name, clip(name), FORMATS[name])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(SENTENCE, body["text"]) <= 0.2, body["text"]
    assert body["language"] == "en"
    assert 3.0 < body["duration"] < 3.6
    assert body["segments"] and {"start", "end", "text"} <= set(body["segments"][0])
    assert body["timings"]["stt_ms"] > 0
    assert "optimized_text" not in body


def test_stt_options(http: httpx.Client) -> None:
    response = http.post(
        "/stt",
        files={"file": ("speech.flac", clip("speech.flac"), "audio/flac")},
        data={
            "language": "en",
            "initial_prompt": "Home automation.",
            "hotwords": "kitchen",
            "word_timestamps": "true",
        },
    )
    assert response.status_code == 200, response.text
    words = [w for s in response.json()["segments"] for w in s["words"]]
    assert any("kitchen" in w["word"].lower() for w in words)
    assert all(0 <= w["start"] <= w["end"] for w in words)


def test_stt_optimize_mode_returns_optimized_text(http: httpx.Client) -> None:
    response = http.post(
        "/stt",
        files={"file": ("speech.mp3", clip("speech.mp3"), "audio/mpeg")},
        data={"optimize_mode": "punctuate"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["optimized_text"].strip()
    assert body["timings"]["llm_ms"] > 0


def test_stt_silence_is_an_empty_transcript(http: httpx.Client) -> None:
    response = http.post("/stt", files={"file": ("silence.wav", clip("silence.wav"), "audio/wav")})
    assert response.status_code == 200
    assert response.json()["text"] == "" and response.json()["segments"] == []


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"", 422),
        (b"this is not audio" * 100, 422),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), 422),
        (clip("speech.mp3")[:40], 422),
        (clip("speech.wav")[:30], 422),
    ],
    ids=["empty", "text", "png", "mp3-header-only", "wav-header-only"],
)
def test_stt_bad_audio_is_a_json_4xx(http: httpx.Client, payload: bytes, status: int) -> None:
    response = http.post("/stt", files={"file": ("upload.wav", payload, "audio/wav")})
    assert_error(response, status)


def test_stt_truncated_audio_transcribes_what_arrived(http: httpx.Client) -> None:
    data = clip("speech.ogg")
    response = http.post("/stt", files={"file": ("cut.ogg", data[: len(data) // 2], "audio/ogg")})
    assert response.status_code == 200
    assert 0.5 < response.json()["duration"] < 3.0


def test_stt_refuses_wrong_requests(http: httpx.Client) -> None:
    assert_error(http.post("/stt", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(http.post("/stt", data={"language": "en"}, files={"other": ("a", b"x")}), 422)
    flac = ("speech.flac", clip("speech.flac"), "audio/flac")
    assert (
        "English-only"
        in assert_error(http.post("/stt", files={"file": flac}, data={"language": "zh"}), 422)["message"]
    )
    assert_error(http.post("/stt", files={"file": flac}, data={"language": "klingon"}), 422)
    assert_error(http.post("/stt", files={"file": flac}, data={"optimize_mode": "poetry"}), 422)
    assert_error(http.post("/stt", files={"file": flac}, data={"word_timestamps": "maybe"}), 422)


def test_stt_refuses_audio_over_the_duration_limit(http: httpx.Client) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16_000 * 70, dtype=np.float32), 16_000, format="FLAC")  # 70 s > 60 s
    response = http.post("/stt", files={"file": ("long.flac", buffer.getvalue(), "audio/flac")})
    assert_error(response, 422, "audio_too_long")


def test_uploads_over_the_size_limit_are_refused(http: httpx.Client) -> None:
    big = b"\x00" * (26 * 1024 * 1024)
    assert_error(http.post("/stt", files={"file": ("big.wav", big, "audio/wav")}), 413, "payload_too_large")
    assert_error(http.post("/conversation", files={"audio_file": ("big.wav", big, "audio/wav")}), 413)


# --- chat --------------------------------------------------------------------------------------


def test_chat_as_form_and_as_json(http: httpx.Client) -> None:
    form = http.post("/chat", data={"text": "Which city is the capital of France?"})
    assert form.status_code == 200, form.text
    body = form.json()
    assert "paris" in body["reply"].lower()
    assert len(body["conversation_id"]) >= 8 and body["timings"]["llm_ms"] > 0
    as_json = http.post("/chat", json={"text": "Say hello."})
    assert as_json.status_code == 200 and as_json.json()["reply"]
    assert as_json.json()["conversation_id"] != body["conversation_id"]


def test_chat_remembers_the_conversation(http: httpx.Client) -> None:
    question = "What did I just tell you?"
    first = http.post("/chat", json={"text": "My favourite animal is the giraffe. Remember that."}).json()
    followup = http.post("/chat", json={"text": question, "conversation_id": first["conversation_id"]}).json()
    fresh = http.post("/chat", json={"text": question}).json()
    assert followup["conversation_id"] == first["conversation_id"]
    assert fresh["conversation_id"] != first["conversation_id"]
    # Greedy decoding: the same question only gets a different reply if the history reached the model.
    assert followup["reply"] != fresh["reply"]
    again = http.post("/chat", json={"text": question, "conversation_id": first["conversation_id"]}).json()
    assert again["conversation_id"] == first["conversation_id"]


def test_chat_accepts_a_client_chosen_id(http: httpx.Client) -> None:
    body = http.post("/chat", json={"text": "Hi there.", "conversation_id": "kitchen-panel-1"}).json()
    assert body["conversation_id"] == "kitchen-panel-1"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"text": ""}}, 422),
        ({"json": {"text": "   "}}, 422),
        ({"json": {}}, 422),
        ({"json": {"text": 42}}, 422),
        ({"json": ["text"]}, 422),
        ({"json": {"text": "x" * 5001}}, 413),
        ({"json": {"text": "hi", "conversation_id": "../../etc/passwd"}}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ],
)
def test_chat_bad_input(http: httpx.Client, kwargs: dict[str, object], status: int) -> None:
    assert_error(http.post("/chat", **kwargs), status)  # type: ignore[arg-type]


# --- TTS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("wav", "audio/wav"),
        ("flac", "audio/flac"),
        ("mp3", "audio/mpeg"),
        ("ogg", "audio/ogg"),
        ("pcm", "audio/pcm"),
    ],
)
def test_tts_formats(http: httpx.Client, fmt: str, content_type: str) -> None:
    response = http.post("/tts", json={"text": "Testing one two three.", "format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["x-segments"] == "1"
    rate = int(response.headers["x-sample-rate"])
    pcm = fmt == "pcm"
    seconds = len(response.content) / 2 / rate if pcm else decode_audio(response.content).duration
    assert 0.8 < seconds < 3.5


def test_tts_to_stt_round_trip_over_http(http: httpx.Client) -> None:
    text = "The museum opens at nine in the morning and closes at five in the afternoon."
    speech = http.post("/tts", json={"text": text, "format": "mp3"})
    assert speech.status_code == 200
    heard = http.post("/stt", files={"file": ("reply.mp3", speech.content, "audio/mpeg")}).json()
    assert word_error_rate(text, heard["text"]) <= 0.15, heard["text"]


def test_tts_long_text_is_segmented_with_silences(http: httpx.Client) -> None:
    text = (
        "The first sentence talks about the weather, which is mild today. "
        "The second one is about the garden, where the roses have started to bloom. "
        "Finally, the third mentions dinner, which will be served at seven o'clock sharp."
    )
    response = http.post("/tts", json={"text": text})
    assert response.status_code == 200
    assert int(response.headers["x-segments"]) >= 2
    heard = http.post("/stt", files={"file": ("long.wav", response.content, "audio/wav")}).json()
    assert word_error_rate(text, heard["text"]) <= 0.2, heard["text"]


def test_tts_dialogue_script_and_casts(http: httpx.Client) -> None:
    lines = ["Good evening and welcome to the program.", "Thank you for inviting me tonight."]
    cast = http.put("/casts/e2e", json={"speakers": {"Host": "Joe", "Guest": "en-Joe_man.wav"}})
    assert cast.status_code == 201, cast.text
    try:
        text = f"Host: {lines[0]}\nGuest: {lines[1]}"
        response = http.post("/tts", json={"text": text, "cast": "e2e"})
        assert response.status_code == 200, response.text
        assert response.headers["x-turns"] == "2" and response.headers["x-shared-voice"] == "true"
        heard = http.post("/stt", files={"file": ("dialogue.wav", response.content, "audio/wav")}).json()
        assert word_error_rate(" ".join(lines), heard["text"]) <= 0.2, heard["text"]
        assert "e2e" in [c["name"] for c in http.get("/speaker_info").json()["casts"]]
    finally:
        assert http.delete("/casts/e2e").status_code == 200
    assert_error(http.post("/tts", json={"text": "Speaker 1:\nSpeaker 2:"}), 422)
    outside = {"text": "Speaker 1: hi", "speakers": {"1": "../../etc/passwd"}}
    assert_error(http.post("/tts", json=outside), 400)


def test_tts_voice_selection(http: httpx.Client) -> None:
    for request in ({"voice": "Joe"}, {"speaker_voice_path": "en-Joe_man.wav"}):
        response = http.post("/tts", json={"text": "Hello.", **request})
        assert response.status_code == 200
        assert response.headers["x-voice"] == "builtin"  # Piper has one fixed voice; documented
    error = assert_error(http.post("/tts", json={"text": "Hello.", "voice": "Nobody"}), 404)
    assert "/voices" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "../secret.wav",
        "en-Link_man.wav",
        "/proc/self/environ",
        "..%2F..%2Fetc%2Fpasswd.wav",
    ],
)
def test_tts_refuses_voice_paths_outside_the_voices_dir(http: httpx.Client, path: str) -> None:
    response = http.post("/tts", json={"text": "Hello.", "speaker_voice_path": path})
    assert response.status_code in (400, 404)
    assert_error(response, response.status_code)
    assert "root:" not in response.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": ""}, 422),
        ({"text": "🎉🎉!!"}, 422),
        ({"text": "x" * 5001}, 413),
        ({"text": "Hi", "cfg_scale": 2.5}, 422),
        ({"text": "Hi", "cfg_scale": 0.4}, 422),
        ({"text": "Hi", "cfg_scale": "loud"}, 422),
        ({"text": "Hi", "format": "aiff"}, 422),
        ({"text": "Hi", "speed": 10}, 422),
        ({"text": ["Hi"]}, 422),
        ({}, 422),
    ],
)
def test_tts_bad_input(http: httpx.Client, body: dict[str, object], status: int) -> None:
    assert_error(http.post("/tts", json=body), status)


def test_tts_needs_json(http: httpx.Client) -> None:
    assert_error(http.post("/tts", data={"text": "Hello"}), 415, "unsupported_media_type")
    assert_error(http.post("/tts", content=b"{oops", headers={"content-type": "application/json"}), 422)


def test_health_answers_while_a_long_synthesis_runs(http: httpx.Client, server: str) -> None:
    text = "This is a long passage that keeps the speech engine busy for a while. " * 12
    done = threading.Event()
    result: dict[str, int] = {}

    def synthesize() -> None:
        with httpx.Client(base_url=server, timeout=120) as other:
            # Piper's joe, the slower embedded voice, so that the work lasts.
            result["status"] = other.post("/tts", json={"text": text, "voice": "piper:joe"}).status_code
        done.set()

    worker = threading.Thread(target=synthesize)
    worker.start()
    time.sleep(0.5)
    answered_during = 0
    while not done.is_set():
        assert http.get("/health", timeout=5).status_code == 200
        answered_during += int(not done.is_set())
        time.sleep(0.2)
    worker.join()
    assert result["status"] == 200
    assert answered_during >= 3


def test_a_full_queue_answers_503_with_retry_after(server: str) -> None:
    # QUEUE_SIZE=1: one synthesis runs, at most one waits (admission by expected wait may refuse
    # it too: ADMISSION_BUDGETS), the rest are refused at once, each with when to retry.
    text = "Keep the speech engine busy with this fairly long sentence for a moment. " * 6
    statuses: list[int] = []
    headers: list[httpx.Headers] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(base_url=server, timeout=120) as c:
            response = c.post("/tts", json={"text": text})
        with lock:
            statuses.append(response.status_code)
            headers.append(response.headers)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= statuses.count(200) <= 2
    assert statuses.count(503) >= 3
    assert all(h.get("retry-after") for h, s in zip(headers, statuses, strict=True) if s == 503)


# --- conversation ------------------------------------------------------------------------------


def test_conversation_round_trip(http: httpx.Client) -> None:
    response = http.post(
        "/conversation", files={"audio_file": ("speech.m4a", clip("speech.m4a"), "audio/mp4")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(SENTENCE, body["transcript"]) <= 0.2, body["transcript"]
    assert body["reply"].strip()
    assert set(body["timings"]) == TURN_TIMINGS
    assert body["timings"]["total_ms"] >= body["timings"]["stt_ms"] + body["timings"]["llm_ms"]
    audio = http.get(body["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert decode_audio(audio.content).duration > 0.3

    follow = http.post(
        "/conversation",
        files={"audio_file": ("speech.ogg", clip("speech.ogg"), "audio/ogg")},
        data={
            "conversation_id": body["conversation_id"],
            "voice": "Joe",
            "format": "mp3",
            "language": "en",
            "initial_prompt": "A smart home.",
            "hotwords": "kitchen",
        },
    ).json()
    assert follow["conversation_id"] == body["conversation_id"]
    assert follow["audio_url"].endswith(".mp3")
    assert http.get(follow["audio_url"]).headers["content-type"] == "audio/mpeg"


def test_conversation_with_silence_has_no_reply(http: httpx.Client) -> None:
    body = http.post(
        "/conversation", files={"audio_file": ("silence.wav", clip("silence.wav"), "audio/wav")}
    ).json()
    assert body["transcript"] == "" and body["reply"] == "" and body["audio_url"] is None


def test_conversation_bad_input(http: httpx.Client) -> None:
    wav = ("speech.wav", clip("speech.wav"), "audio/wav")
    assert_error(http.post("/conversation", data={"conversation_id": "x"}, files={"f": ("a", b"1")}), 422)
    assert_error(http.post("/conversation", files={"audio_file": ("x.wav", b"garbage", "audio/wav")}), 422)
    assert_error(http.post("/conversation", files={"audio_file": wav}, data={"voice": "Nobody"}), 404)
    assert_error(http.post("/conversation", files={"audio_file": wav}, data={"conversation_id": "a b"}), 422)
    assert_error(http.post("/conversation", json={"audio_file": "x"}), 415)


def test_streamed_chat_tts_and_conversation_over_http(http: httpx.Client) -> None:
    with http.stream("POST", "/chat", json={"text": "Say hello.", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chat = parse_sse(response.iter_lines())
    assert chat[-1][0] == "done" and chat[0][0] == "reply_delta"

    with http.stream("POST", "/tts", json={"text": SENTENCE, "format": "ogg", "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "audio/ogg"
        speech = response.read()
    heard = http.post("/stt", files={"file": ("s.ogg", speech, "audio/ogg")}).json()["text"]
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard

    with http.stream(
        "POST",
        "/conversation",
        files={"audio_file": ("speech.webm", clip("speech.webm"), "audio/webm")},
        data={"stream": "true", "format": "mp3"},
    ) as response:
        events = parse_sse(response.iter_lines())
    names = [name for name, _ in events]
    assert names[0] == "transcript" and names[-1] == "done" and "audio" in names
    assert word_error_rate(SENTENCE, str(events[0][1]["text"])) <= 0.2
    first_audio = next(data for name, data in events if name == "audio")
    assert decode_audio(base64.b64decode(str(first_audio["audio"]))).duration > 0.2
    assert set(events[-1][1]["timings"]) == TURN_TIMINGS  # type: ignore[arg-type]


def test_a_streamed_turn_abandoned_by_its_client_is_stopped_and_kept(http: httpx.Client) -> None:
    """The client hangs up at the first words of the reply: the turn is stored, the reply marked
    interrupted, and the server goes on serving."""
    cid = ""
    with http.stream(
        "POST",
        "/conversation",
        files={"audio_file": ("speech.wav", clip("speech.wav"), "audio/wav")},
        data={"stream": "true"},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and not cid:
                cid = json.loads(line[5:])["conversation_id"]
            if line == "event: reply_delta":
                break
    assert cid
    deadline = time.monotonic() + 20
    turns: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(turns) < 2:
        time.sleep(0.2)
        turns = http.get(f"/conversations/{cid}").json()["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert word_error_rate(SENTENCE, str(turns[0]["text"])) <= 0.2
    assert turns[1]["interrupted"] is True
    assert http.post("/chat", json={"text": "Hello"}).status_code == 200


def test_realtime_websocket_turn(server: str) -> None:
    """A microphone-like client: real speech then silence as 20 ms PCM16 frames, paced in real time."""
    speech = decode_audio(clip("speech.wav"), 16000).samples
    pcm = (np.concatenate([np.zeros(8000), speech, np.zeros(16000)]) * 32767).astype("<i2").tobytes()
    url = server.replace("http://", "ws://") + "/ws/conversation"
    types: list[str] = []
    audio = 0
    with ws_connect(url, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(ws.recv())["type"] == "ready"
        began = time.perf_counter()
        for i, start in enumerate(range(0, len(pcm), 640)):
            ws.send(pcm[start : start + 640])
            time.sleep(max(0.0, began + (i + 1) * 0.02 - time.perf_counter()))
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                audio += len(message)
                continue
            event = json.loads(message)
            types.append(event["type"])
            if event["type"] == "transcript":
                assert word_error_rate(SENTENCE, event["text"]) <= 0.2, event["text"]
            if event["type"] in ("turn_end", "error"):
                break
        ws.send(json.dumps({"type": "stop"}))
        assert json.loads(ws.recv())["type"] == "session_end"
    # Live partial transcripts (the words so far) come only while the user speaks.
    turn = [t for t in types if t != "transcript_delta"]
    assert turn[:3] == ["speech_start", "speech_end", "transcript"] and turn[-1] == "turn_end", types
    assert all(i < types.index("speech_end") for i, t in enumerate(types) if t == "transcript_delta"), types
    assert "audio_start" in types and audio > 22050  # over half a second of PCM16 at 22.05 kHz


def test_realtime_websocket_refuses_protocol_errors(server: str) -> None:
    url = server.replace("http://", "ws://") + "/ws/conversation"
    with ws_connect(url) as ws:
        ws.send(b"\x00\x00")  # audio before start
        error = json.loads(ws.recv())
        assert error["type"] == "error" and error["code"] == "protocol_error"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert httpx.get(server + "/health").status_code == 200


def test_conversations_are_stored_listed_patched_and_deleted(http: httpx.Client) -> None:
    body = http.post(
        "/conversation", files={"audio_file": ("speech.flac", clip("speech.flac"), "audio/flac")}
    ).json()
    cid = body["conversation_id"]
    listed = http.get("/conversations", params={"limit": 5}).json()
    assert listed["conversations"][0]["id"] == cid and listed["total"] >= 1
    detail = http.get(f"/conversations/{cid}").json()
    user, assistant = detail["turns"]
    assert user["role"] == "user" and user["text"] == body["transcript"] and user["language"] == "en"
    assert user["timings"]["stt_ms"] > 0
    assert assistant["text"] == body["reply"] and assistant["audio_url"] == body["audio_url"]
    assert set(assistant["timings"]) == TURN_TIMINGS
    assert detail["title"] == body["transcript"][:60] and detail["turn_count"] == 2

    patched = http.patch(
        f"/conversations/{cid}",
        json={"title": "Kitchen", "system_prompt": "Answer in one word.", "voice": "Joe"},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["title"], patched.json()["voice"]) == ("Kitchen", "en-Joe_man.wav")
    assert http.patch(f"/conversations/{cid}", json={"system_prompt": ""}).json()["system_prompt"] is None
    assert_error(http.patch(f"/conversations/{cid}", json={"voice": "Nobody"}), 404)
    assert_error(http.patch(f"/conversations/{cid}", data={"title": "x"}), 415)

    # The conversation's own voice is used for its replies; once that voice is gone, the default.
    created = http.post(
        "/voices",
        files={"file": ("v.m4a", clip("speech.m4a"), "audio/mp4")},
        data={"name": "Temp", "language": "en", "gender": "man"},
    )
    assert created.status_code == 201
    assert http.patch(f"/conversations/{cid}", json={"voice": "Temp"}).json()["voice"] == "en-Temp_man.wav"
    assert http.delete("/voices/Temp").status_code == 200
    again = http.post(
        "/conversation",
        files={"audio_file": ("speech.flac", clip("speech.flac"), "audio/flac")},
        data={"conversation_id": cid},
    )
    assert again.status_code == 200, again.text

    assert http.get(body["audio_url"]).status_code == 200
    deleted = http.delete(f"/conversations/{cid}")
    assert deleted.status_code == 200 and deleted.json()["audio_files_removed"] == 2
    assert http.get(body["audio_url"]).status_code == 404
    assert_error(http.get(f"/conversations/{cid}"), 404)
    assert_error(http.delete(f"/conversations/{cid}"), 404)
    assert_error(http.get("/conversations/not%20valid"), 422)
    assert_error(http.get("/conversations", params={"limit": 0}), 422)


def test_parallel_chats_on_one_conversation_are_serialised(server: str, http: httpx.Client) -> None:
    statuses: list[int] = []

    def ask(i: int) -> None:
        with httpx.Client(base_url=server, timeout=120) as c:
            statuses.append(
                c.post("/chat", json={"text": f"Say {i}.", "conversation_id": "parallel"}).status_code
            )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]
    turns = http.get("/conversations/parallel").json()["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3


def test_acknowledged_turns_survive_sigkill(tmp: Path) -> None:
    process, base = start_server(tmp, "kill.log", DATA_DIR=str(tmp / "kill-data"))
    try:
        reply = httpx.post(f"{base}/chat", json={"text": "Remember the number seven."}, timeout=120).json()
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed survives
        process.wait(timeout=20)
    # What a restarted server would read: the database as the killed one left it (WAL included).
    store = ConversationStore(tmp / "kill-data" / "conversations.db")
    try:
        turns = store.turns(reply["conversation_id"])
    finally:
        store.close()
    assert [(t.role, t.text) for t in turns] == [
        ("user", "Remember the number seven."),
        ("assistant", reply["reply"]),
    ]


@pytest.mark.parametrize(
    "name", ["nope.wav", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "0" * 32 + ".exe", ".gitkeep"]
)
def test_outputs_serves_only_generated_names(http: httpx.Client, name: str) -> None:
    response = http.get(f"/outputs/{name}")
    assert response.status_code == 404
    assert "root:" not in response.text


def test_openapi_docs(http: httpx.Client) -> None:
    assert http.get("/docs").status_code == 200
    assert "/conversation" in http.get("/openapi.json").json()["paths"]


# --- start-up ----------------------------------------------------------------------------------


def test_missing_model_file_stops_start_up_with_one_clear_message(tmp: Path) -> None:
    missing = tmp / "no-such-voice.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "backend.app"],
        cwd=REPO,
        env=server_env(tmp, free_port(), TTS_MODEL_NAME=str(missing)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "error:" in result.stderr


def test_invalid_configuration_is_reported_without_a_traceback(tmp: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backend.app"],
        cwd=REPO,
        env=server_env(tmp, free_port(), DEFAULT_CFG_SCALE="9"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "default_cfg_scale" in result.stderr and "Traceback" not in result.stderr


def test_help_describes_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backend.app", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--port" in result.stdout


@pytest.mark.parametrize("text", ["um so we should uh meet on friday", "嗯那个我们周五见面吧"])
def test_optimize_route(http: httpx.Client, text: str) -> None:
    for mode in ("optimize", "format", "punctuate"):
        response = http.post("/optimize", json={"text": text, "mode": mode})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["text"] == text and body["mode"] == mode and body["optimized_text"].strip()
        assert body["timings"]["llm_ms"] > 0
    punctuated = http.post("/optimize", json={"text": text, "mode": "punctuate"}).json()["optimized_text"]
    assert "".join(ch for ch in punctuated.lower() if ch.isalnum()) == "".join(
        ch for ch in text.lower() if ch.isalnum()
    )


def test_optimize_bad_input(http: httpx.Client) -> None:
    assert_error(http.post("/optimize", json={"text": "hi", "mode": "custom"}), 422)
    assert_error(http.post("/optimize", json={"text": "hi", "mode": "poem"}), 422)
    assert_error(http.post("/optimize", json={"text": "x" * 5001}), 413, "text_too_long")
    assert_error(http.post("/optimize", data={"text": "hi"}), 415)


def test_metrics_in_prometheus_format(http: httpx.Client) -> None:
    def count(text: str, line_start: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))

    stt_ok = 'voice_dialogue_http_requests_total{method="POST",route="/stt",status="200"}'
    before = http.get("/metrics").text
    assert http.post("/stt", files={"file": ("s.flac", clip("speech.flac"), "audio/flac")}).status_code == 200
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert count(response.text, stt_ok) == count(before, stt_ok) + 1
    stt_stage = 'voice_dialogue_stage_duration_seconds_count{stage="stt"}'
    assert count(response.text, stt_stage) == count(before, stt_stage) + 1
    for name in ("model_queue_depth", "model_busy", "model_load_seconds", "audio_synthesized_seconds_total"):
        assert f"\nvoice_dialogue_{name}" in response.text, name


def test_the_container_health_check_against_the_running_server(server: str) -> None:
    """The exact command of the Dockerfile's HEALTHCHECK (and the compose file's): 0 on a ready
    server, 1 with the reason when nothing answers."""
    dockerfile = (REPO / "Dockerfile").read_text()
    commands = {json.dumps(json.loads(m)) for m in re.findall(r"HEALTHCHECK .* CMD (\[.*\])", dockerfile)}
    assert len(commands) == 1
    argv = json.loads(commands.pop())
    assert argv[0] == "python"
    command = [sys.executable, *argv[1:]]
    env = {**os.environ, "PORT": server.rsplit(":", 1)[1]}
    ready = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert ready.returncode == 0, ready.stderr
    env["PORT"] = str(free_port())
    down = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "not ready" in down.stderr


def test_the_gpu_check_script_against_the_running_server(server: str) -> None:
    """`scripts.gpu_check --url` drives a running server through a whole turn (here on the CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gpu_check", "--url", server, "--allow-cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "POST /conversation answered 200" in result.stdout and "streamed" in result.stdout
    dead = subprocess.run(
        [sys.executable, "-m", "scripts.gpu_check", "--url", f"http://127.0.0.1:{free_port()}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 2 and "cannot reach the server" in dead.stderr


def test_the_server_speaks_wyoming_beside_http(server: str) -> None:
    """WYOMING_URI: the same process answers Home Assistant's protocol on the models HTTP uses."""
    import asyncio

    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info
    from wyoming.tts import Synthesize

    sentence = "Please turn the kitchen lights off."

    async def run() -> tuple[Info, str]:
        async with AsyncTcpClient("127.0.0.1", WYOMING_PORT) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await asyncio.wait_for(client.read_event(), 30))  # type: ignore[arg-type]
            await client.write_event(Synthesize(text=sentence).event())
            chunks = []
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                if AudioChunk.is_type(event.type):
                    chunks.append(AudioChunk.from_event(event))
                if AudioStop.is_type(event.type):
                    break
        rate = chunks[0].rate
        async with AsyncTcpClient("127.0.0.1", WYOMING_PORT) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            for chunk in chunks:
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                if Transcript.is_type(event.type):
                    return info, Transcript.from_event(event).text
        raise AssertionError("no transcript")

    info, heard = asyncio.run(run())
    assert info.asr and info.tts and info.handle
    assert word_error_rate(sentence, heard) <= SYNTH_WER, heard
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    assert 'voice_dialogue_wyoming_events_total{outcome="ok",type="synthesize"}' in metrics


def test_the_script_mode_passes_against_a_running_server(server: str) -> None:
    """`python test_api.py --url ...`, as a user checks a deployment: every route PASSes."""
    result = subprocess.run(
        [sys.executable, "test_api.py", "--url", server],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) >= 12 and all(line.startswith("PASS") for line in lines), result.stdout
    assert re.search(r"^\d+ passed, 0 failed$", result.stdout, re.M)
    down = subprocess.run(
        [sys.executable, "test_api.py", "--url", f"http://127.0.0.1:{free_port()}"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert down.returncode == 2 and "cannot reach" in down.stdout


def test_the_per_stage_self_checks(tmp: Path) -> None:
    """`python -m backend.app check tts stt`: each stage loaded alone, run once, timed, no server."""
    from backend.app.selfcheck import SENTENCE

    command = [sys.executable, "-m", "backend.app", "check", "tts", "stt"]
    env = server_env(tmp, free_port())
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tts: hibari" in result.stdout and "real-time factor" in result.stdout
    heard = re.search(r"heard .*?: '(.*)'$", result.stdout, re.M)
    assert heard and word_error_rate(SENTENCE, heard.group(1)) <= SYNTH_WER, result.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "backend.app", "check", "ears"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "unknown stage" in wrong.stderr


def test_the_tts_check_script_against_the_running_server(server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.tts_check", "--url", server],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"PASS .*: [1-9]\d* segments", result.stdout) and "speaker cache:" in result.stdout


if __name__ == "__main__":
    from tests.smoke import main

    sys.exit(main())
