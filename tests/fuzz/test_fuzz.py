"""Fuzzing a live server: schemathesis over the OpenAPI schema, and hypothesis with strategies for
hostile audio (random bytes, truncated or corrupted files, odd sample rates, NaN/inf samples, 0 and
8 channels, 7.1 AAC and Opus, a looped syllable), header fields at boundary values (WAV, FLAC, MP3,
Ogg, MP4, AAC in ADTS), hostile text (RTL, combining marks, 10k emoji, NUL bytes, lone surrogates) and wrong
types. Every request must get a non-5xx answer, and the server must stay up.

In `make test` the run is sized for CI (over 5,000 requests); `make fuzz` sets FUZZ_SCALE=10.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from tests.hostile_audio import hostile_header, looped_aac, surround
from tests.server import REPO, server_dir, start_server, stop_server

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
DATA = REPO / "tests" / "data"
REQUESTS = {"sent": 0}
STAGES_RUN: set[str] = set()
"""The fuzz stages that ran in this session: the verdict needs them all."""
LOG: dict[str, Path] = {"path": Path("/nonexistent")}
ARTIFACTS = REPO / "tests" / "artifacts"  # git-ignored; fuzz.json records how many requests were sent
MIN_REQUESTS = 5000
FUZZ_ENV = {
    # Small limits keep each valid request cheap, so thousands fit in CI's budget.
    "MAX_TTS_CHARS": "40",
    "MAX_AUDIO_SECONDS": "3",
    "LLM_CONTEXT_TOKENS": "512",
    "LLM_MAX_TOKENS": "2",
    "STT_BEAM_SIZE": "1",
    "QUEUE_SIZE": "8",
    "MAX_UPLOAD_MB": "2",
    "LOG_LEVEL": "warning",
}
FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure in CI reproduces locally
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    root = server_dir(tmp_path_factory, "fuzz")
    LOG["path"] = root / "fuzz.log"
    process, base = start_server(root, "fuzz.log", **FUZZ_ENV)
    yield process, base
    stop_server(process)


@pytest.fixture(scope="module")
def base(served: tuple[subprocess.Popen[bytes], str]) -> str:
    return served[1]


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=120) as client:
        yield client


def server_log_for(log_path: Path, request_id: str) -> str:
    """The server's log lines for one request (the generic 500 handler logs there with the id)."""
    if not request_id or not log_path.exists():
        return ""
    return "\n".join(line for line in log_path.read_text(errors="replace").splitlines() if request_id in line)


def fail_on_5xx(status: int, body: bytes, request_id: str, what: str, log_path: Path | None = None) -> None:
    """Count the request and fail on a 5xx, with what the server logged for that request."""
    REQUESTS["sent"] += 1
    if status >= 500:
        logged = server_log_for(log_path or LOG["path"], request_id)
        text = body[:300].decode(errors="replace")
        raise AssertionError(f"{what}: {status} {text}\nserver log for this request:\n{logged}")


def check(response: httpx.Response, what: str, log_path: Path | None = None) -> None:
    """`fail_on_5xx`, and an error answered as JSON has our error shape."""
    fail_on_5xx(
        response.status_code, response.content, response.headers.get("x-request-id", ""), what, log_path
    )
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert "error" in response.json(), response.text[:300]


# --- schemathesis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(base: str) -> Any:
    return schemathesis.openapi.from_url(f"{base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=25 * SCALE)
def test_every_operation_of_the_schema(case: Any, base: str) -> None:
    STAGES_RUN.add("schema")
    response = case.call(base_url=base, timeout=120)
    request_id = (response.headers.get("x-request-id") or [""])[0]  # schemathesis: lists of values
    fail_on_5xx(response.status_code, response.content, request_id, f"{case.method} {case.formatted_path}")


# --- hostile audio --------------------------------------------------------------------------

SPEECH = {
    name: (DATA / name).read_bytes() for name in ("speech.wav", "speech.flac", "speech.mp3", "speech.ogg")
}


def wav_bytes(channels: int, rate: int, bits: int, samples: bytes) -> bytes:
    """A WAV file written by hand, so that any header field can be wrong (0 channels, rate 0...)."""
    fmt_tag = 3 if bits == 32 else 1  # IEEE float for 32 bits, PCM otherwise
    block = max(channels, 0) * bits // 8
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(samples),
        b"WAVE",
        b"fmt ",
        16,
        fmt_tag,
        channels,
        rate,
        (rate * block) & 0xFFFFFFFF,
        block,
        bits,
        b"data",
        len(samples),
    )
    return header + samples


@st.composite
def hostile_wav(draw: st.DrawFn) -> bytes:
    channels = draw(st.sampled_from([0, 1, 2, 8]))
    rate = draw(st.sampled_from([0, 1, 100, 8000, 16000, 22050, 48000, 192000, 2**31 - 1]))
    bits = draw(st.sampled_from([8, 16, 32]))
    frames = draw(st.integers(0, 4000))
    if bits == 32:
        specials = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e30, -1.0, 1.0])
        values = draw(st.lists(specials, min_size=1, max_size=8))
        data = np.resize(np.array(values, dtype=np.float32), frames * max(channels, 1)).tobytes()
    else:
        data = draw(st.binary(min_size=0, max_size=64)) * (frames * max(channels, 1) * bits // 8 // 64 + 1)
    return wav_bytes(channels, rate, bits, data)


@st.composite
def mutated_speech(draw: st.DrawFn) -> bytes:
    data = bytearray(SPEECH[draw(st.sampled_from(sorted(SPEECH)))])
    how = draw(st.sampled_from(["truncate", "corrupt_header", "flip_bytes", "splice"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if how == "corrupt_header":
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, min(63, len(data) - 1)))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "flip_bytes":
        for _ in range(draw(st.integers(1, 64))):
            data[draw(st.integers(0, len(data) - 1))] ^= 0xFF
        return bytes(data)
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=2048)) + bytes(data[cut:])


def resampled_speech(rate: int) -> bytes:
    audio, native = sf.read(io.BytesIO(SPEECH["speech.flac"]), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, audio[: native // 2], rate, format="WAV")  # the samples, relabelled at `rate`
    return buffer.getvalue()


# Files that are ordinary but crashed or held a model: 7.1 AAC and Opus (eight planar channels
# crashed the process), a syllable looped in AAC (it sends Whisper into a repetition loop).
CRAFTED = [
    surround("adts", "aac"),
    surround("mp4", "aac"),
    surround("ogg", "libopus"),
    looped_aac(2.9, offset=1.0),
]
audio_payloads = st.one_of(
    st.binary(max_size=4096),
    hostile_wav(),
    mutated_speech(),
    st.sampled_from([1000, 4000, 11025, 96000]).map(resampled_speech),
)
AUDIO_ROUTES = [
    ("/stt", "file", {}),
    ("/v1/audio/transcriptions", "file", {"model": "whisper-1"}),
    ("/v1/audio/translations", "file", {"model": "whisper-1"}),
    ("/conversation", "audio_file", {}),
    ("/voices", "file", {"name": "Fuzz", "language": "en", "gender": "man"}),
]


@given(
    payload=audio_payloads,
    route=st.sampled_from(AUDIO_ROUTES),
    filename=st.sampled_from(["a.wav", "a.mp3", "x", "a.ogg"]),
)
@settings(FUZZ_SETTINGS, max_examples=900 * SCALE)
def test_hostile_audio_never_gets_a_5xx(
    http: httpx.Client, payload: bytes, route: tuple[str, str, dict[str, str]], filename: str
) -> None:
    STAGES_RUN.add("audio")
    path, field, form = route
    response = http.post(path, files={field: (filename, payload, "application/octet-stream")}, data=form)
    check(response, f"POST {path} with {len(payload)} bytes")
    if path == "/voices" and response.status_code == 201:
        check(http.delete("/voices/Fuzz"), "DELETE /voices/Fuzz")


@pytest.mark.parametrize("route", AUDIO_ROUTES, ids=[r[0] for r in AUDIO_ROUTES])
def test_crafted_files_on_every_audio_route(
    http: httpx.Client, route: tuple[str, str, dict[str, str]]
) -> None:
    STAGES_RUN.add("crafted")
    path, field, form = route
    for i, payload in enumerate(CRAFTED):
        response = http.post(path, files={field: ("a.bin", payload, "application/octet-stream")}, data=form)
        check(response, f"POST {path} with crafted file {i}")
        if path in ("/stt", "/v1/audio/transcriptions"):  # valid audio, within the limits
            assert response.status_code == 200, response.text[:300]
        if path == "/voices" and response.status_code == 201:
            check(http.delete("/voices/Fuzz"), "DELETE /voices/Fuzz")


# --- hostile text ---------------------------------------------------------------------------

RTL = "مرحبا بالعالم שלום עולם "
COMBINING = "".join(chr(c) for c in range(0x300, 0x36F))
EMOJI = "😀🎉👩‍👩‍👧‍👦🏳️‍🌈"

hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=[]), max_size=300),  # surrogates included
    st.sampled_from([RTL * 5, "a" + COMBINING * 3, EMOJI * 2500, "\x00" * 50, "hi\x00there", "\u202e" + RTL]),
    st.builds(
        lambda base, marks: base + marks, st.text(max_size=50), st.text(alphabet=COMBINING, max_size=200)
    ),
    st.integers(1, 20000).map(lambda n: "é" * n),
)


def json_body(payload: dict[str, Any]) -> bytes:
    # ensure_ascii escapes lone surrogates as \\udXXX: valid JSON, invalid Unicode.
    return json.dumps(payload, ensure_ascii=True).encode()


TEXT_ROUTES = [
    ("/tts", lambda t: {"text": t}),
    ("/chat", lambda t: {"text": t}),
    (
        "/v1/audio/speech",
        lambda t: {"model": "tts-1", "voice": "alloy", "input": t, "response_format": "pcm"},
    ),
    (
        "/v1/chat/completions",
        lambda t: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t}]},
    ),
    ("/tts", lambda t: {"text": "Hello.", "voice": t}),
    ("/tts", lambda t: {"text": "Hello.", "speaker_voice_path": t}),
    ("/chat", lambda t: {"text": "Hi.", "conversation_id": t}),
]


@given(text=hostile_text, route=st.integers(0, len(TEXT_ROUTES) - 1))
@settings(FUZZ_SETTINGS, max_examples=300 * SCALE)
def test_hostile_text_never_gets_a_5xx(http: httpx.Client, text: str, route: int) -> None:
    STAGES_RUN.add("text")
    path, build = TEXT_ROUTES[route]
    response = http.post(path, content=json_body(build(text)), headers={"content-type": "application/json"})
    check(response, f"POST {path} with {len(text)} characters")


# /optimize rewrites the whole text with the LLM (seconds per request on a CPU): fewer examples.
@given(text=hostile_text, mode=st.sampled_from(["optimize", "format", "punctuate", "custom"]))
@settings(FUZZ_SETTINGS, max_examples=8 * SCALE)
def test_hostile_text_to_optimize_never_gets_a_5xx(http: httpx.Client, text: str, mode: str) -> None:
    STAGES_RUN.add("optimize")
    body = {"text": text, "mode": mode, "custom_prompt": text if mode == "custom" else None}
    response = http.post("/optimize", content=json_body(body), headers={"content-type": "application/json"})
    check(response, f"POST /optimize {mode} with {len(text)} characters")


# --- header fields at boundary values (tests/hostile_audio.py) ------------------------------


@given(
    case=hostile_header,
    route=st.sampled_from(AUDIO_ROUTES),
    field_values=st.sampled_from([{}, {"language": "en"}, {"word_timestamps": "true"}]),
)
@settings(FUZZ_SETTINGS, max_examples=500 * SCALE)
def test_audio_headers_at_boundary_values_never_get_a_5xx(
    http: httpx.Client,
    case: tuple[str, bytes],
    route: tuple[str, str, dict[str, str]],
    field_values: dict[str, str],
) -> None:
    STAGES_RUN.add("headers")
    label, payload = case
    path, field, form = route
    extra = field_values if path in ("/stt", "/v1/audio/transcriptions") else {}
    response = http.post(
        path, files={field: ("a.bin", payload, "application/octet-stream")}, data={**form, **extra}
    )
    check(response, f"POST {path} with {label}")
    if path == "/voices" and response.status_code == 201:
        check(http.delete("/voices/Fuzz"), "DELETE /voices/Fuzz")


# --- nesting, invalid code points and pathological Unicode in every field ---------------------

# Each JSON route with the string fields it reads; a body is built with one field set to the text.
JSON_STRING_FIELDS: dict[str, dict[str, Any]] = {
    "/tts": {"text": "Hello.", "voice": None, "speaker_voice_path": None, "format": "wav"},
    "/chat": {"text": "Hi.", "conversation_id": None},
    "/optimize": {"text": "um hi", "mode": "optimize", "custom_prompt": None},
    "/v1/audio/speech": {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"},
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": "user", "stop": None, "user": None},
    "/conversations/fuzz": {"title": "t"},
}
# Raw bytes that are not UTF-8 (a CESU-8 surrogate, a stray continuation byte, an overlong NUL).
BAD_BYTES = [b"\xed\xa0\x80", b"\x80abc", b"\xc0\x80", b"\xff\xfe", b"ok\xf4\x90\x80\x80"]
# Form fields of the multipart routes (the upload itself is fine: speech).
FORM_FIELDS = {
    "/stt": ("file", ["language", "initial_prompt", "hotwords", "optimize_mode", "custom_prompt"]),
    "/conversation": ("audio_file", ["conversation_id", "voice", "language", "initial_prompt", "format"]),
    "/voices": ("file", ["name", "language", "gender"]),
    "/v1/audio/transcriptions": ("file", ["model", "prompt", "language", "response_format"]),
}

invalid_code_points = st.one_of(
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=8),  # lone surrogates
    st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d", "\ud83d\ud83d\ude00"]),
    st.sampled_from(["\ufffe", "\uffff", "\U0010ffff", "\U000e0001", "\x00", "\x7f\x85\u2028"]),
)
pathological = st.sampled_from(
    [
        "a" + "\u0301" * 4000,  # one letter, 4,000 combining marks
        "\u200d" * 5000,  # zero-width joiners
        "\u202e" * 100 + "abc" + "\u202d" * 100,  # bidi overrides
        "你好" * 2000,  # CJK that an English voice spells out
        "1" * 5000,  # one enormous number
        "ﷺ" * 2000,  # a ligature that expands under NFKC
        "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" * 500,
        "ǅ" * 3000,  # title-case digraphs
    ]
)


def with_field(route: str, field: str, text: str) -> dict[str, Any]:
    body = {k: v for k, v in JSON_STRING_FIELDS[route].items() if v is not None}
    if route == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "Hi." if field != "messages" else text}]
        if field != "messages":
            body[field] = [text] if field == "stop" else text
        return body
    body[field] = text
    return body


@given(
    route=st.sampled_from(sorted(JSON_STRING_FIELDS)),
    data=st.data(),
    text=st.one_of(
        invalid_code_points, pathological, invalid_code_points.map(lambda bad: f"Hello {bad} there.")
    ),
)
@settings(FUZZ_SETTINGS, max_examples=300 * SCALE)
def test_every_json_string_field_with_invalid_or_pathological_text(
    http: httpx.Client, route: str, data: st.DataObject, text: str
) -> None:
    STAGES_RUN.add("unicode")
    field = data.draw(st.sampled_from(sorted(JSON_STRING_FIELDS[route])))
    method = "PATCH" if route.startswith("/conversations/") else "POST"
    body = json_body(with_field(route, field, text))
    response = http.request(method, route, content=body, headers={"content-type": "application/json"})
    check(response, f"{method} {route} with {field}={text[:20]!r}")


@given(
    route=st.sampled_from(sorted(FORM_FIELDS)),
    data=st.data(),
    value=st.one_of(
        st.sampled_from(BAD_BYTES), invalid_code_points.map(lambda t: t.encode("utf-8", "surrogatepass"))
    ),
)
@settings(FUZZ_SETTINGS, max_examples=80 * SCALE)
def test_every_form_field_with_bytes_that_are_not_utf8(
    http: httpx.Client, route: str, data: st.DataObject, value: bytes
) -> None:
    STAGES_RUN.add("forms")
    upload, fields = FORM_FIELDS[route]
    field = data.draw(st.sampled_from(fields))
    boundary = "fuzzboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'.encode() + value + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="{upload}"; filename="s.flac"\r\n'.encode()
        + b"Content-Type: audio/flac\r\n\r\n"
        + SPEECH["speech.flac"][:8000]  # half a second: the fields are under test, not the speech
        + b"\r\n",
    ]
    if route == "/voices":
        for name, default in (("name", b"Fuzz"), ("language", b"en"), ("gender", b"man")):
            if name != field:
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                    + default
                    + b"\r\n"
                )
    if route == "/v1/audio/transcriptions" and field != "model":
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'.encode()
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = http.post(route, content=body, headers=headers)
    check(response, f"POST {route} with {field}={value!r}")
    if route == "/voices" and response.status_code == 201:
        check(http.delete("/voices/Fuzz"), "DELETE /voices/Fuzz")


@given(
    route=st.sampled_from([*sorted(JSON_STRING_FIELDS), "/ws"]),
    depth=st.sampled_from([63, 64, 65, 200, 10_000, 100_000]),
    opener=st.sampled_from(["[", '{"a":', '{"text":']),
)
@settings(FUZZ_SETTINGS, max_examples=120 * SCALE)
def test_nesting_of_any_depth_never_gets_a_5xx(
    http: httpx.Client, base: str, route: str, depth: int, opener: str
) -> None:
    STAGES_RUN.add("nesting")
    closer = "]" if opener == "[" else "}"
    raw = opener * depth + "1" + closer * depth
    if route == "/ws":  # the realtime WebSocket's JSON messages
        with ws_connect(base.replace("http", "ws") + "/ws/conversation", max_size=None) as ws:
            ws.send(raw[:60_000])
            reply = json.loads(ws.recv(timeout=30))
        REQUESTS["sent"] += 1
        assert reply["type"] == "error" and reply["code"] == "protocol_error", reply
        return
    method = "PATCH" if route.startswith("/conversations/") else "POST"
    response = http.request(method, route, content=raw.encode(), headers={"content-type": "application/json"})
    check(response, f"{method} {route} nested {depth} deep")


# --- wrong types ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
JSON_ROUTES = [
    "/tts",
    "/chat",
    "/optimize",
    "/v1/audio/speech",
    "/v1/chat/completions",
    "/conversations/fuzz",
]
FIELDS = [
    "text",
    "input",
    "messages",
    "model",
    "voice",
    "format",
    "response_format",
    "speed",
    "cfg_scale",
    "stream",
    "max_tokens",
    "temperature",
    "stop",
    "conversation_id",
    "mode",
    "title",
    "n",
]


@given(
    route=st.sampled_from(JSON_ROUTES),
    body=st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)),
    raw=st.booleans(),
)
@settings(FUZZ_SETTINGS, max_examples=3500 * SCALE)
def test_wrong_types_never_get_a_5xx(http: httpx.Client, route: str, body: Any, raw: bool) -> None:
    STAGES_RUN.add("types")
    content = json.dumps(body, allow_nan=True).encode()
    if raw:  # not JSON at all, or JSON under the wrong content type
        content = content[: len(content) // 2]
    method = "PATCH" if route.startswith("/conversations/") else "POST"
    response = http.request(method, route, content=content, headers={"content-type": "application/json"})
    check(response, f"{method} {route} {content[:80]!r}")


# --- the verdict ----------------------------------------------------------------------------


ALL_STAGES = {
    "schema",
    "audio",
    "crafted",
    "headers",
    "text",
    "optimize",
    "unicode",
    "forms",
    "nesting",
    "types",
}


def test_the_server_survived_every_request(
    served: tuple[subprocess.Popen[bytes], str], http: httpx.Client
) -> None:
    """The verdict over the stages that ran before it in this session (pytest runs a module's
    tests in file order). Alone, or with none of them, it has nothing to judge and says so."""
    if not STAGES_RUN:
        pytest.skip("no fuzz stage ran in this session: run tests/fuzz/test_fuzz.py whole for the verdict")
    process, _ = served
    assert process.poll() is None, "the server process died"
    health = http.get("/health").json()
    assert health["status"] == "ok", health
    assert all(m["in_progress"] in (0, None) for m in health["modules"].values()), health
    spoken = http.post("/tts", json={"text": "Still here."})
    assert spoken.status_code == 200 and len(spoken.content) > 1000
    errors = [
        line for line in LOG["path"].read_text(errors="replace").splitlines() if "unhandled error" in line
    ]
    assert not errors, "the server logged unexpected errors:\n" + "\n".join(errors[:5])
    ARTIFACTS.mkdir(exist_ok=True)
    record = {"requests": REQUESTS["sent"], "scale": SCALE, "stages": sorted(STAGES_RUN)}
    (ARTIFACTS / "fuzz.json").write_text(json.dumps(record))
    print(f"fuzz: {REQUESTS['sent']} requests over the stages {sorted(STAGES_RUN)}")
    if STAGES_RUN == ALL_STAGES:  # a partial selection (-k) sends fewer by design
        assert REQUESTS["sent"] >= MIN_REQUESTS * SCALE or os.environ.get("FUZZ_PARTIAL"), REQUESTS


def test_a_5xx_fails_the_run_with_the_server_log_line(tmp_path: Path) -> None:
    """`check` on a 500 shows what the server logged for that request id."""
    log = tmp_path / "server.log"
    log.write_text(
        '{"level": "info", "message": "GET /tts 200", "request_id": "other"}\n'
        '{"level": "error", "logger": "backend.app.errors", "message": "unhandled error in POST /tts '
        '(request r-42)", "request_id": "r-42", "exc": "RuntimeError: boom"}\n'
    )
    crashed = httpx.Response(
        500, json={"error": {"code": "internal_error"}}, headers={"x-request-id": "r-42"}
    )
    with pytest.raises(AssertionError) as failed:
        check(crashed, "POST /tts", log)
    assert "unhandled error in POST /tts (request r-42)" in str(failed.value)
    assert "RuntimeError: boom" in str(failed.value) and "GET /tts 200" not in str(failed.value)
    check(httpx.Response(422, json={"error": {"code": "invalid_input"}}), "POST /tts", log)  # a 4xx passes
