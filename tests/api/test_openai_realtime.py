"""/v1/realtime, driven by the official `openai` SDK's realtime connection (`client.realtime.connect`)
against uvicorn on localhost, on the real embedded models: a spoken turn from a recording sent at
real-time pace, typed items, manual commits, cancel and barge-in, a transcription-only session,
protocol errors, and authentication. Every server event is checked against the SDK's own types."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.main import create_app
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA, SENTENCE, make_settings, realtime_services
from tests.server import in_thread

RATE = 24000
CHUNK_S = 0.1
SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
TRANSCRIBED = {"transcription": {"model": "whisper-1"}}


def pcm24(audio: Audio) -> bytes:
    samples = resample(audio, RATE).samples
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


@pytest.fixture(scope="module")
def speech() -> bytes:
    return pcm24(decode_audio((DATA / "speech.wav").read_bytes(), RATE))


@dataclasses.dataclass
class Server:
    url: str
    services: Services


def _serve(services: Services, tmp: Path, chat_tokens: int, **settings: Any) -> Iterator[Server]:
    """uvicorn in a thread, over the shared models, with its own limits and LLM reply length."""
    config = make_settings(tmp, **settings)
    custom = realtime_services(services, config, chat_tokens)
    app = create_app(config, custom)
    with in_thread(app) as port:
        yield Server(f"http://127.0.0.1:{port}", custom)


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("rt"), chat_tokens=24)


@pytest.fixture(scope="module")
def long_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Replies of up to 300 tokens: long enough to be cut."""
    yield from _serve(services, tmp_path_factory.mktemp("rt-long"), chat_tokens=300)


def sdk(server: Server, key: str = "sk-anything") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


class Events:
    """The server events received, raw (dicts), each validated against the SDK's types."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.all: list[dict[str, Any]] = []

    async def until(self, done: Callable[[dict[str, Any]], bool], within: float = 60) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while True:
                raw = await self.connection.recv_bytes()
                event = json.loads(raw)
                SERVER_EVENTS.validate_python(event)  # the SDK's shape, strictly
                assert event["event_id"].startswith("event_")
                self.all.append(event)
                got.append(event)
                if done(event):
                    return got

    async def of(self, kind: str, within: float = 60) -> dict[str, Any]:
        return (await self.until(lambda e: e["type"] == kind, within))[-1]

    def types(self) -> list[str]:
        return [e["type"] for e in self.all]


async def send_paced(connection: Any, pcm: bytes, pace: float = 1.0) -> None:
    """Append audio in 100 ms events, at `pace` times real time (1.0 = as a microphone would)."""
    step = int(RATE * CHUNK_S) * 2
    for offset in range(0, len(pcm), step):
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(pcm[offset : offset + step]).decode()
        )
        if pace:
            await asyncio.sleep(CHUNK_S / pace)


def reply_audio(events: list[dict[str, Any]]) -> Audio:
    pcm = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    return Audio(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, RATE)


def heard(services: Services, audio: Audio) -> str:
    return services.stt.backend.transcribe(resample(audio, 16000), TranscribeOptions(language="en")).text


def tokens(services: Services) -> int:
    backend = services.chat.backend
    assert isinstance(backend, LlamaCppChatBackend)
    return backend.tokens_generated()


@pytest.mark.parametrize(
    "detection",
    [{"type": "server_vad"}, {"type": "semantic_vad", "eagerness": "high"}],
    ids=lambda d: d["type"],
)
def test_a_spoken_turn_with_server_vad(server: Server, speech: bytes, detection: dict[str, Any]) -> None:
    async def run() -> tuple[Events, str]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            created = await events.of("session.created")
            assert created["session"]["type"] == "realtime"
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            audio_in = {**TRANSCRIBED, "turn_detection": detection}
            await connection.session.update(
                session={"type": "realtime", "audio": {"input": audio_in, "output": {"voice": "alloy"}}}
            )
            updated = await events.of("session.updated")
            turn_detection = updated["session"]["audio"]["input"]["turn_detection"]
            assert {k: turn_detection[k] for k in detection} == detection
            await send_paced(connection, silence(0.5) + speech + silence(1.5))
            await events.of("response.done")
            return events, conversation

    events, conversation = asyncio.run(run())
    types = events.types()
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_item.done",
        "response.done",
    ]
    positions = [types.index(kind) for kind in order]
    assert positions == sorted(positions), types
    transcript = next(e for e in events.all if e["type"].endswith("input_audio_transcription.completed"))
    assert word_error_rate(SENTENCE, transcript["transcript"]) <= 0.2, transcript["transcript"]
    assert transcript["usage"]["type"] == "duration" and transcript["usage"]["seconds"] > 2
    done = events.all[-1]["response"]
    assert done["status"] == "completed"
    usage = done["usage"]
    assert usage["input_tokens"] > 10 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    said = next(e for e in events.all if e["type"] == "response.output_audio_transcript.done")["transcript"]
    deltas = "".join(e["delta"] for e in events.all if e["type"] == "response.output_audio_transcript.delta")
    assert deltas.strip() == said and said
    assert done["output"][0]["content"][0]["transcript"] == said
    # The reply's audio, at 24 kHz, says the reply: decoded back through STT.
    audio = reply_audio(events.all)
    assert audio.duration > 0.5
    assert word_error_rate(said, heard(server.services, audio)) <= 0.35
    # The session is a stored conversation.
    turns = server.services.history.store.turns(conversation)
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[0].text == transcript["transcript"] and turns[1].text == said


def test_a_typed_item_and_response_create(server: Server) -> None:
    async def run() -> tuple[Events, str]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Say hello to me in one short sentence."}],
                }
            )
            added = await events.of("conversation.item.added")
            assert added["item"]["content"][0]["text"].startswith("Say hello")
            await connection.response.create(response={"metadata": {"topic": "greeting"}})
            await events.of("response.done")
            return events, conversation

    events, conversation = asyncio.run(run())
    created = next(e for e in events.all if e["type"] == "response.created")["response"]
    assert created["status"] == "in_progress" and created["metadata"] == {"topic": "greeting"}
    done = events.all[-1]["response"]
    assert done["status"] == "completed" and done["id"] == created["id"]
    said = done["output"][0]["content"][0]["transcript"]
    assert said and reply_audio(events.all).duration > 0.3
    turns = server.services.history.store.turns(conversation)
    assert [t.role for t in turns] == ["user", "assistant"] and turns[1].text == said


def test_a_text_only_response(server: Server) -> None:
    async def run() -> Events:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await events.of("session.updated")
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}
            )
            await connection.response.create()
            await events.of("response.done")
            return events

    events = asyncio.run(run())
    types = events.types()
    assert "response.output_text.delta" in types and "response.output_audio.delta" not in types
    text = next(e for e in events.all if e["type"] == "response.output_text.done")["text"]
    assert (
        text == "".join(e["delta"] for e in events.all if e["type"] == "response.output_text.delta").strip()
    )


def test_manual_commit_with_turn_detection_off(server: Server, speech: bytes) -> None:
    async def run() -> Events:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await connection.session.update(
                session={"type": "realtime", "audio": {"input": {**TRANSCRIBED, "turn_detection": None}}}
            )
            updated = await events.of("session.updated")
            assert updated["session"]["audio"]["input"]["turn_detection"] is None
            await send_paced(connection, silence(0.3) + speech + silence(1.0), pace=0)
            await asyncio.sleep(1.0)  # a VAD would have ended the turn by now
            await connection.input_audio_buffer.commit()
            await events.of("conversation.item.input_audio_transcription.completed")
            await asyncio.sleep(0.5)
            assert "response.created" not in events.types()  # no automatic response
            await connection.response.create()
            await events.of("response.done")
            return events

    events = asyncio.run(run())
    types = events.types()
    assert "input_audio_buffer.speech_started" not in types
    transcript = next(e for e in events.all if e["type"].endswith("transcription.completed"))["transcript"]
    assert word_error_rate(SENTENCE, transcript) <= 0.2, transcript
    assert events.all[-1]["response"]["status"] == "completed"


def test_response_cancel_stops_the_llm(long_server: Server) -> None:
    services = long_server.services

    async def run() -> tuple[Events, str, dict[str, Any], int]:
        async with sdk(long_server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Tell me a very long story about a brave knight."}
                    ],
                }
            )
            # The model may end its story before the cancel arrives (then the cancel is refused,
            # as OpenAI's is, and the next answer is cancelled instead): a few tries.
            for _ in range(3):
                base = tokens(services)
                await connection.response.create()
                await events.of("response.output_audio.delta", within=120)
                assert services.chat.worker.pending == 1  # still generating
                await connection.response.cancel()
                done = (await events.of("response.done"))["response"]
                if done["status"] == "cancelled":
                    break
                error = await events.of("error")
                assert error["error"]["code"] == "response_cancel_not_active"
            for _ in range(60):  # up to 3 s for the worker to notice
                if not services.chat.worker.pending:
                    break
                await asyncio.sleep(0.05)
            assert services.chat.worker.pending == 0
            # llama.cpp counts a request's tokens when it ends: wait for the count to settle.
            counted, still = tokens(services), 0
            for _ in range(100):
                await asyncio.sleep(0.1)
                now = tokens(services)
                still = still + 1 if now == counted else 0
                counted = now
                if still >= 10:
                    break
            sent = sum(
                1
                for e in events.all
                if e["type"] == "response.output_audio_transcript.delta" and e["response_id"] == done["id"]
            )
            # What it generated is what it had sent, and the few tokens under way at the cancel.
            assert counted - base <= sent + 8, (
                "the LLM kept generating after response.cancel",
                counted - base,
                sent,
            )
            # Nothing to cancel now: an error, and the connection goes on.
            await connection.response.cancel()
            error = await events.of("error")
            assert error["error"]["code"] == "response_cancel_not_active"
            return events, conversation, done, services.chat.worker.pending

    _, conversation, done, pending = asyncio.run(run())
    assert pending == 0
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    said = done["output"][0]["content"][0]["transcript"]
    assert done["output"][0]["status"] == "incomplete"
    turns = services.history.store.turns(conversation)
    assert turns[0].role == "user" and not turns[0].interrupted
    assert turns[-1].role == "assistant" and turns[-1].interrupted
    assert all(not t.interrupted for t in turns[1:-1])  # answers that ended before their cancel
    assert turns[-1].text == said and len(said) < 600


def test_speech_during_a_response_cuts_it(long_server: Server, speech: bytes) -> None:
    services = long_server.services
    ask = pcm24(
        services.tts.backend.synthesize(SynthesisRequest("Tell me a very long story about a dragon."))
    )

    async def run() -> tuple[Events, str]:
        async with sdk(long_server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            await connection.session.update(session={"type": "realtime", "audio": {"input": TRANSCRIBED}})
            await send_paced(connection, silence(0.3) + ask + silence(1.0), pace=4)
            await events.of("response.output_audio.delta", within=120)
            await send_paced(connection, speech + silence(1.2), pace=2)
            await events.until(
                lambda e: e["type"] == "response.done" and e["response"]["status"] == "completed", 120
            )
            return events, conversation

    events, conversation = asyncio.run(run())
    types = events.types()
    first_done = types.index("response.done")
    assert types.index("input_audio_buffer.speech_started", types.index("response.created")) < first_done
    cut = events.all[first_done]["response"]
    assert cut["status"] == "cancelled" and cut["status_details"]["reason"] == "turn_detected"
    turns = services.history.store.turns(conversation)
    assert [(t.role, t.interrupted) for t in turns] == [
        ("user", False),
        ("assistant", True),
        ("user", False),
        ("assistant", False),
    ]
    assert turns[1].text == cut["output"][0]["content"][0]["transcript"]
    assert word_error_rate(SENTENCE, turns[2].text) <= 0.2, turns[2].text


def test_speech_during_the_last_turns_transcription_keeps_that_turn(server: Server, speech: bytes) -> None:
    """Two turns spoken back to back while the STT model is busy (held until both are committed):
    the first, cut by the second before it was answered, is still transcribed and stored, each
    item gets its own transcript (none is failed or mixed up), and the second is answered."""
    services = server.services
    gate = threading.Event()
    holder = threading.Thread(target=lambda: asyncio.run(services.stt.worker.run(gate.wait, 60)))

    async def run() -> tuple[Events, str]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            # Turns ended by silence (server_vad): the first must end before its words are known.
            by_silence = {**TRANSCRIBED, "turn_detection": {"type": "server_vad"}}
            await connection.session.update(session={"type": "realtime", "audio": {"input": by_silence}})
            await events.of("session.updated")
            await send_paced(connection, silence(0.3) + speech + silence(0.8) + speech + silence(1.2), pace=0)
            for _ in range(2):  # both turns are committed while the first still waits for the model
                await events.of("input_audio_buffer.committed")
            gate.set()
            await events.of("response.done", within=120)
            return events, conversation

    holder.start()
    try:
        while services.stt.worker.load()[0] == 0:  # the STT model is busy
            time.sleep(0.01)
        events, conversation = asyncio.run(run())
    finally:
        gate.set()
        holder.join()
    items = [e["item_id"] for e in events.all if e["type"] == "input_audio_buffer.committed"]
    transcribed = [e for e in events.all if e["type"].endswith("input_audio_transcription.completed")]
    assert [e["item_id"] for e in transcribed] == items, events.types()
    assert not [e for e in events.all if e["type"].endswith("input_audio_transcription.failed")]
    for event in transcribed:
        assert word_error_rate(SENTENCE, event["transcript"]) <= 0.2, event["transcript"]
    assert events.types().count("response.created") == 1
    assert events.all[-1]["response"]["status"] == "completed"
    turns = services.history.store.turns(conversation)
    assert [t.role for t in turns] == ["user", "user", "assistant"]
    assert [t.text for t in turns[:2]] == [e["transcript"] for e in transcribed]


def test_a_transcription_only_session(server: Server, speech: bytes) -> None:
    async def run() -> Events:
        client = sdk(server)
        async with client.realtime.connect(
            model="whisper-1", extra_query={"intent": "transcription"}
        ) as connection:
            events = Events(connection)
            created = await events.of("session.created")
            assert created["session"]["type"] == "transcription"
            await send_paced(connection, silence(0.3) + speech + silence(1.0) + speech + silence(1.2), pace=4)
            await events.of("conversation.item.input_audio_transcription.completed")
            await events.of("conversation.item.input_audio_transcription.completed")
            await connection.response.create()
            await events.of("error")
            return events

    events = asyncio.run(run())
    transcripts = [e["transcript"] for e in events.all if e["type"].endswith("transcription.completed")]
    assert len(transcripts) == 2
    assert all(word_error_rate(SENTENCE, t) <= 0.2 for t in transcripts), transcripts
    assert not [t for t in events.types() if t.startswith("response.")]


def test_a_realtime_connection_can_become_a_transcription_session(server: Server, speech: bytes) -> None:
    async def run() -> Events:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await connection.session.update(
                session={
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                }
            )
            updated = await events.of("session.updated")
            assert updated["session"]["type"] == "transcription"
            await send_paced(connection, speech + silence(1.2), pace=4)
            await events.of("conversation.item.input_audio_transcription.completed")
            return events

    events = asyncio.run(run())
    assert not [t for t in events.types() if t.startswith("response.")]


@pytest.mark.parametrize(
    ("send", "code", "param"),
    [
        ({"type": "dance"}, "invalid_value", "type"),
        ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
        (
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()},
            "invalid_value",
            "audio",
        ),
        ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
        ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
        (
            {"type": "session.update", "session": {"type": "realtime", "colour": "red"}},
            "unknown_parameter",
            "session.colour",
        ),
        (
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"output": {"voice": "Nobody"}}},
            },
            "invalid_value",
            "session.audio.output.voice",
        ),
        (
            {
                "type": "session.update",
                "session": {"type": "realtime", "tools": [{"type": "mcp", "server_label": "elsewhere"}]},
            },
            "invalid_value",
            "session.tools[0].server_label",  # a client cannot name an MCP server of its own
        ),
        (
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 12345}}},
                },
            },
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_image"}]},
            },
            "unsupported",
            "item.content[0].type",
        ),
        ({"type": "response.cancel"}, "response_cancel_not_active", None),
        ({"type": "conversation.item.delete", "item_id": "item_x"}, "unsupported", "type"),
    ],
)
def test_protocol_errors_are_answered_and_the_connection_goes_on(
    server: Server, send: dict[str, Any], code: str, param: str | None
) -> None:
    async def run() -> dict[str, Any]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await events.of("conversation.created")
            await connection.send_raw(json.dumps({**send, "event_id": "evt_client_1"}))
            error = await events.of("error")
            await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
            assert (await events.of("session.updated"))["session"]["instructions"] == "Be brief."
            return error

    error = asyncio.run(run())["error"]
    assert error["code"] == code and error["message"] and error["param"] == param
    assert error["event_id"] == "evt_client_1"


def test_malformed_frames_are_answered_and_the_connection_goes_on(services: Services, tmp_path: Path) -> None:
    for running in _serve(services, tmp_path, chat_tokens=24, ws_max_event_bytes=4096):

        async def run(running: Server) -> list[dict[str, Any]]:
            async with sdk(running).realtime.connect(model="gpt-realtime") as connection:
                events = Events(connection)
                await events.of("conversation.created")
                errors = []
                for raw in (
                    "not json",
                    "[1, 2]",
                    json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 8000}),
                ):
                    await connection.send_raw(raw)
                    errors.append(await events.of("error"))
                await connection._connection.send(
                    b"\x00\x01"
                )  # a binary frame: audio as our own protocol sends it
                errors.append(await events.of("error"))
                await connection.session.update(session={"type": "realtime"})
                await events.of("session.updated")
                return errors

        codes = [e["error"]["code"] for e in asyncio.run(run(running))]
        assert codes == ["invalid_json", "invalid_json", "event_too_large", "invalid_value"]


def test_authentication_by_header_and_by_subprotocol(services: Services, tmp_path: Path) -> None:
    for running in _serve(services, tmp_path, chat_tokens=24, api_key="s3cret"):

        async def run(running: Server) -> None:
            async with sdk(running, key="s3cret").realtime.connect(model="gpt-realtime") as connection:
                assert json.loads(await connection.recv_bytes())["type"] == "session.created"
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with sdk(running, key="wrong").realtime.connect(model="gpt-realtime") as connection:
                    await connection.recv_bytes()
            url = running.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
            protocols = ["realtime", "openai-insecure-api-key.s3cret"]
            async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
                assert ws.subprotocol == "realtime"
                assert json.loads(await ws.recv())["type"] == "session.created"

        asyncio.run(run(running))
