"""Fuzzing a live server: schemathesis over the OpenAPI schema, and hypothesis with strategies for
hostile audio (random bytes, truncated or corrupted files, odd sample rates, NaN/inf samples, 0 and
8 channels), hostile text (RTL, combining marks, 10k emoji, NUL bytes, lone surrogates) and wrong
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
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server import REPO, server_dir, start_server, stop_server

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
DATA = REPO / "tests" / "data"
REQUESTS = {"sent": 0}
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
    process, base = start_server(server_dir(tmp_path_factory, "fuzz"), "fuzz.log", **FUZZ_ENV)
    yield process, base
    stop_server(process)


@pytest.fixture(scope="module")
def base(served: tuple[subprocess.Popen[bytes], str]) -> str:
    return served[1]


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=120) as client:
        yield client


def check(response: httpx.Response, what: str) -> None:
    REQUESTS["sent"] += 1
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
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
    response = case.call(base_url=base, timeout=120)
    REQUESTS["sent"] += 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )


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
    path, field, form = route
    response = http.post(path, files={field: (filename, payload, "application/octet-stream")}, data=form)
    check(response, f"POST {path} with {len(payload)} bytes")
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
@settings(FUZZ_SETTINGS, max_examples=400 * SCALE)
def test_hostile_text_never_gets_a_5xx(http: httpx.Client, text: str, route: int) -> None:
    path, build = TEXT_ROUTES[route]
    response = http.post(path, content=json_body(build(text)), headers={"content-type": "application/json"})
    check(response, f"POST {path} with {len(text)} characters")


# /optimize rewrites the whole text with the LLM (seconds per request on a CPU): fewer examples.
@given(text=hostile_text, mode=st.sampled_from(["optimize", "format", "punctuate", "custom"]))
@settings(FUZZ_SETTINGS, max_examples=8 * SCALE)
def test_hostile_text_to_optimize_never_gets_a_5xx(http: httpx.Client, text: str, mode: str) -> None:
    body = {"text": text, "mode": mode, "custom_prompt": text if mode == "custom" else None}
    response = http.post("/optimize", content=json_body(body), headers={"content-type": "application/json"})
    check(response, f"POST /optimize {mode} with {len(text)} characters")


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
    content = json.dumps(body, allow_nan=True).encode()
    if raw:  # not JSON at all, or JSON under the wrong content type
        content = content[: len(content) // 2]
    method = "PATCH" if route.startswith("/conversations/") else "POST"
    response = http.request(method, route, content=content, headers={"content-type": "application/json"})
    check(response, f"{method} {route} {content[:80]!r}")


# --- the verdict ----------------------------------------------------------------------------


def test_the_server_survived_every_request(
    served: tuple[subprocess.Popen[bytes], str], http: httpx.Client
) -> None:
    process, _ = served
    assert process.poll() is None, "the server process died"
    health = http.get("/health").json()
    assert health["status"] == "ok", health
    assert all(m["in_progress"] in (0, None) for m in health["modules"].values()), health
    spoken = http.post("/tts", json={"text": "Still here."})
    assert spoken.status_code == 200 and len(spoken.content) > 1000
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz.json").write_text(json.dumps({"requests": REQUESTS["sent"], "scale": SCALE}))
    assert REQUESTS["sent"] >= MIN_REQUESTS * SCALE or os.environ.get("FUZZ_PARTIAL"), REQUESTS
