"""End-to-end: the OpenAI-compatible /v1 routes, driven by the official `openai` Python client
against the real server on localhost, on the real embedded models.

A second server runs with LLM_BACKEND=openai pointed at the first one's /v1/chat/completions, so
that backend is exercised over real HTTP; it also has an API key, for the authentication checks.

Run with `make test` (or `.venv/bin/python -m pytest test_openai_api.py`).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from openai import OpenAI

from backend.app.audio.decode import decode_audio
from backend.app.text.wer import word_error_rate
from tests.server import server_dir, start_server, stop_server

REPO = Path(__file__).parent
DATA = REPO / "tests" / "data"
SENTENCE = (DATA / "SENTENCE.txt").read_text().strip()
SPOKEN = "The weather is lovely today. Let us take a walk in the park."
MAX_UPLOAD_MB = 2
PROXY_KEY = "proxy-secret"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server_dir(tmp_path_factory, "openai-e2e", ("en-Joe_man.wav", "en-Eve_woman.wav"))


@pytest.fixture(scope="module")
def server(tmp: Path) -> Iterator[str]:
    process, base = start_server(tmp, "openai.log", MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), QUEUE_SIZE="4")
    try:
        yield base
        assert process.poll() is None, "the server died during the tests"
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def client(server: str) -> OpenAI:
    # No API_KEY on this server: any key is accepted, as with a local OpenAI-compatible server.
    return OpenAI(base_url=f"{server}/v1", api_key="sk-anything", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def proxy(tmp: Path, server: str) -> Iterator[str]:
    """A second server whose chat stage is the first server's /v1, reached with the openai client."""
    process, base = start_server(
        tmp,
        "proxy.log",
        LLM_BACKEND="openai",
        LLM_BASE_URL=f"{server}/v1",
        LLM_MODEL="gpt-4o-mini",  # an alias the first server accepts for its LLM
        LLM_API_KEY="sk-anything",
        API_KEY=PROXY_KEY,
        DATA_DIR=str(tmp / "proxy-data"),
        OUTPUTS_DIR=str(tmp / "proxy-outputs"),
    )
    try:
        yield base
        assert process.poll() is None, "the proxy server died during the tests"
    finally:
        stop_server(process)


def transcribe(client: OpenAI, name: str, data: bytes) -> str:
    return client.audio.transcriptions.create(model="whisper-1", file=(name, data)).text


def as_wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.frombuffer(pcm, dtype="<i2"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# --- models ------------------------------------------------------------------------------------


def test_the_model_list_has_every_stage(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["whisper-tiny.en", "hibari-af_heart+piper-en_US-joe-medium", "SmolLM2-135M-Instruct"]
    assert client.models.retrieve("whisper-1").id == "whisper-tiny.en"  # a stock alias
    assert client.models.retrieve("tts-1").id == "hibari-af_heart+piper-en_US-joe-medium"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


# --- transcription -----------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_in_every_response_format(client: OpenAI, response_format: str) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.mp3", (DATA / "speech.mp3").read_bytes()),
        response_format=response_format,  # type: ignore[arg-type]
        language="en",
    )
    if response_format in ("json", "verbose_json"):
        text = result.text  # type: ignore[union-attr]
    else:
        assert isinstance(result, str)
        text = result
    if response_format == "srt":
        assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", text)
        text = " ".join(line for line in text.splitlines() if re.search(r"[a-z]", line))
    if response_format == "vtt":
        assert text.startswith("WEBVTT\n\n") and re.search(r"00:00:\d\d\.\d{3} --> 00:00:\d\d\.\d{3}", text)
        text = " ".join(line for line in text.splitlines()[1:] if re.search(r"[a-z]", line))
    if response_format == "verbose_json":
        assert result.language == "english" and result.duration == pytest.approx(3.3, abs=0.2)  # type: ignore[union-attr]
        segment = result.segments[0]  # type: ignore[union-attr]
        assert segment.id == 0 and 0 <= segment.start < segment.end <= 3.4 and segment.tokens
        assert -5 < segment.avg_logprob <= 0 and 0 <= segment.no_speech_prob <= 1
        assert result.words is None  # type: ignore[union-attr]
    assert word_error_rate(SENTENCE, text) <= 0.2, text


def test_streamed_transcription_through_the_sdk(client: OpenAI) -> None:
    text = (
        "The library opens at nine. Children's books are on the second floor. "
        "The reading room closes an hour before the building does, at six in the evening."
    )
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav")
    events = list(
        client.audio.transcriptions.create(
            model="whisper-1", file=("library.wav", speech.content), stream=True
        )
    )
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done" and deltas
    assert "".join(deltas) == done.text  # the deltas add up to the text
    assert word_error_rate(text, done.text) <= 0.2, done.text
    assert done.usage is not None


def test_transcription_word_timestamps(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", (DATA / "speech.wav").read_bytes()),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert result.segments is None and result.words
    assert [w.word.strip(".,").lower() for w in result.words][:3] == ["please", "turn", "on"]
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in result.words)
    assert result.usage is not None


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations so
def test_translation_of_english_speech(client: OpenAI) -> None:
    result = client.audio.translations.create(
        model="whisper-1", file=("speech.ogg", (DATA / "speech.ogg").read_bytes())
    )
    assert word_error_rate(SENTENCE, result.text) <= 0.2
    verbose = client.audio.translations.create(
        model="whisper-1",
        file=("speech.ogg", (DATA / "speech.ogg").read_bytes()),
        response_format="verbose_json",
    )
    assert verbose.language == "english" and verbose.segments


# --- speech ------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_format_transcribes_back(client: OpenAI, response_format: str) -> None:
    audio = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=SPOKEN,
        response_format=response_format,  # type: ignore[arg-type]
    )
    data = audio.content
    if response_format == "pcm":
        assert audio.response.headers["x-sample-rate"] == "24000"
        data = as_wav(data, 24_000)
    decoded = decode_audio(data)
    assert 2.0 < decoded.duration < 8.0
    heard = transcribe(client, f"speech.{response_format}", data)
    assert word_error_rate(SPOKEN, heard) <= 0.25, heard


def test_speech_streams_as_audio_and_as_sse(client: OpenAI) -> None:
    # Over SEGMENT_THRESHOLD_CHARS, so synthesised in segments. Distinct sentences: Whisper tends to
    # drop a sentence that repeats the one before, which would measure Whisper, not the stream.
    long_text = (
        f"{SPOKEN} We could stop at the bakery on the corner and buy some fresh bread. "
        "After that, we might visit the museum near the river before it closes at six."
    )
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="onyx", input=long_text, response_format="mp3"
    ) as response:
        chunks = [chunk for chunk in response.iter_bytes(chunk_size=None) if chunk]  # type: ignore[arg-type]
    assert len(chunks) >= 2, "the audio should arrive segment by segment"
    streamed = b"".join(chunks)
    assert word_error_rate(long_text, transcribe(client, "long.mp3", streamed)) <= 0.25

    events = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="nova", input=SPOKEN, response_format="pcm", stream_format="sse"
    )
    payloads = [json.loads(line[6:]) for line in events.text.splitlines() if line.startswith("data: ")]
    assert [p["type"] for p in payloads][-1] == "speech.audio.done"
    assert {p["type"] for p in payloads[:-1]} == {"speech.audio.delta"}
    assert payloads[-1]["usage"]["input_tokens"] > 0
    pcm = b"".join(base64.b64decode(p["audio"]) for p in payloads[:-1])
    assert word_error_rate(SPOKEN, transcribe(client, "sse.wav", as_wav(pcm, 24_000))) <= 0.25


def test_speech_voices_speed_and_instructions(client: OpenAI, server: str) -> None:
    table = httpx.get(f"{server}/v1/audio/voices").json()
    # The embedded voices clone nothing: a stock name stands for the engine's voice of its gender.
    assert table["openai_voices"]["nova"] == "piper:heart"
    assert table["openai_voices"]["onyx"] == "piper:joe"
    assert {"alloy", "shimmer", "Joe", "Eve", "heart", "joe"} <= set(table["voices"])

    def duration(**extra: object) -> float:
        audio = client.audio.speech.create(
            model="tts-1",
            voice="Eve",
            input=SPOKEN,
            response_format="wav",
            **extra,  # type: ignore[arg-type]
        )
        return decode_audio(audio.content).duration

    normal = duration()
    assert duration(speed=2.0) < normal * 0.7
    assert duration(speed=0.5) > normal * 1.5
    assert duration(instructions="Speak cheerfully.") == pytest.approx(normal, rel=0.25)


# --- chat --------------------------------------------------------------------------------------

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


def test_chat_completion_streamed_and_not(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
    assert whole.object == "chat.completion" and whole.model == "SmolLM2-135M-Instruct"
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = whole.usage
    assert usage and usage.prompt_tokens > 5 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=QUESTION,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # greedy decoding: the same reply either way
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == usage
    assert len({c.id for c in chunks}) == 1


def test_chat_completion_limits_and_stops(client: OpenAI) -> None:
    short = client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)  # type: ignore[arg-type]
    assert short.choices[0].finish_reason == "length" and short.usage and short.usage.completion_tokens <= 3
    story = [{"role": "user", "content": "Tell me a very long story about the sea."}]
    capped = client.chat.completions.create(model="gpt-4o", messages=story, max_tokens=1500)  # type: ignore[arg-type]
    assert capped.usage and capped.usage.completion_tokens <= 33  # LLM_MAX_TOKENS=32 is the ceiling
    sentence = [{"role": "user", "content": "Write two sentences about the sea."}]
    stopped = client.chat.completions.create(model="gpt-4o", messages=sentence, stop=["."])  # type: ignore[arg-type]
    assert "." not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"
    developer = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "text", "text": "Name a color."}]},
        ],
    )
    assert developer.choices[0].message.content


# --- errors ------------------------------------------------------------------------------------


def test_errors_surface_as_the_sdks_exceptions(client: OpenAI) -> None:
    def error_of(exc_type: type[openai.APIStatusError], call: object) -> dict[str, object]:
        with pytest.raises(exc_type) as caught:
            call()  # type: ignore[operator]
        body = caught.value.body
        assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
        return body

    chat = client.chat.completions.create
    speech = client.audio.speech.create
    wav = ("speech.wav", (DATA / "speech.wav").read_bytes())

    body = error_of(openai.NotFoundError, lambda: chat(model="gpt-9", messages=QUESTION))
    assert body["code"] == "model_not_found" and body["param"] == "model"
    body = error_of(openai.BadRequestError, lambda: chat(model="gpt-4o", messages=QUESTION, temperature=5))
    assert body["param"] == "temperature" and body["type"] == "invalid_request_error"
    body = error_of(openai.BadRequestError, lambda: chat(model="gpt-4o", messages=[]))
    assert body["param"] == "messages"
    body = error_of(
        openai.BadRequestError,
        lambda: chat(model="gpt-4o", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]),
    )
    assert body["param"] == "messages.[0].tool_call_id"  # it answers no call made before it
    body = error_of(
        openai.BadRequestError,
        lambda: chat(model="gpt-4o", messages=[{"role": "function", "content": "x", "name": "f"}]),
    )
    assert body["param"] == "messages.[0].role"  # the legacy role: `tool` messages instead
    body = error_of(
        openai.BadRequestError,
        lambda: chat(model="gpt-4o", messages=[{"role": "user", "content": "word " * 3000}]),
    )
    assert body["code"] == "context_length_exceeded"
    body = error_of(openai.BadRequestError, lambda: chat(model="whisper-1", messages=QUESTION))
    assert body["param"] == "model"

    body = error_of(openai.BadRequestError, lambda: speech(model="tts-1", voice="nobody", input="Hi."))
    assert body["param"] == "voice"
    body = error_of(
        openai.BadRequestError, lambda: speech(model="tts-1", voice="alloy", input="Hi.", speed=5)
    )
    assert body["param"] == "speed"
    body = error_of(openai.BadRequestError, lambda: speech(model="tts-1", voice="alloy", input=" "))
    assert body["param"] == "input"
    body = error_of(
        openai.BadRequestError,
        lambda: speech(model="tts-1", voice="alloy", input="Hi.", response_format="ogg"),  # type: ignore[arg-type]
    )
    assert body["param"] == "response_format"

    transcriptions = client.audio.transcriptions.create
    body = error_of(
        openai.BadRequestError, lambda: transcriptions(model="whisper-1", file=("a.wav", b"not audio"))
    )
    assert body["code"] == "invalid_audio" and body["param"] == "file"
    body = error_of(
        openai.BadRequestError, lambda: transcriptions(model="whisper-1", file=wav, language="xx")
    )
    assert body["param"] == "language"
    body = error_of(
        openai.BadRequestError,
        lambda: transcriptions(model="whisper-1", file=wav, timestamp_granularities=["word"]),
    )
    assert body["param"] == "timestamp_granularities"
    body = error_of(
        openai.BadRequestError,
        lambda: transcriptions(model="whisper-1", file=wav, stream=True, response_format="srt"),  # type: ignore[call-overload]
    )
    assert body["param"] == "response_format"
    body = error_of(openai.NotFoundError, lambda: transcriptions(model="tts-2", file=wav))
    assert body["code"] == "model_not_found"
    too_big = ("big.wav", b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 200_000))
    with pytest.raises(openai.APIStatusError) as caught:
        transcriptions(model="whisper-1", file=too_big)
    assert caught.value.status_code == 413


def test_plain_http_errors_have_openais_shape(server: str) -> None:
    missing = httpx.post(f"{server}/v1/embeddings", json={"input": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    not_json = httpx.post(
        f"{server}/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and set(not_json.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    form = httpx.post(f"{server}/v1/audio/speech", data={"input": "Hi"})
    assert form.status_code == 400
    no_file = httpx.post(f"{server}/v1/audio/transcriptions", files={"model": (None, "whisper-1")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"


# --- the openai LLM backend, against this server -----------------------------------------------


def test_the_openai_backend_talks_to_this_servers_chat_completions(proxy: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=f"{proxy}/v1", api_key="wrong", max_retries=0).models.list()
    assert caught.value.code == "invalid_api_key"

    health = httpx.get(f"{proxy}/health").json()["modules"]["chat"]
    assert health["model"] == "gpt-4o-mini" and health["device"].startswith("remote (http://127.0.0.1:")

    client = OpenAI(base_url=f"{proxy}/v1", api_key=PROXY_KEY, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()][2] == "gpt-4o-mini"
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert whole.choices[0].message.content and text == whole.choices[0].message.content
    assert "paris" in text.lower()

    # The conversation routes use the same backend: chat (non-streamed and streamed) via HTTP.
    auth = {"Authorization": f"Bearer {PROXY_KEY}"}
    reply = httpx.post(
        f"{proxy}/chat", json={"text": "Which city is the capital of France?"}, headers=auth, timeout=120
    )
    assert reply.status_code == 200, reply.text
    assert "paris" in reply.json()["reply"].lower()
    with httpx.stream(
        "POST", f"{proxy}/chat", json={"text": "Hello!", "stream": True}, headers=auth, timeout=120
    ) as events:
        body = events.read().decode()
    assert "event: reply_delta" in body and "event: done" in body
