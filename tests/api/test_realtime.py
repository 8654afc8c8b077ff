"""The realtime WebSocket, driven by a client that streams real speech (the embedded Piper voice) and
silence as PCM16 frames: event order, transcript, reply audio, barge-in, and protocol errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from backend.app.audio.decode import decode_audio, resample
from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest
from backend.app.main import create_app
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA, SENTENCE, make_settings, realtime_services

FRAME = 640  # 20 ms of 16 kHz PCM16


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(16000 * seconds) * 2)


@pytest.fixture(scope="module")
def speech() -> bytes:
    return pcm16(decode_audio((DATA / "speech.wav").read_bytes(), 16000).samples)


def send_audio(ws: WebSocketTestSession, pcm: bytes) -> None:
    for start in range(0, len(pcm), FRAME):
        ws.send_bytes(pcm[start : start + FRAME])


@dataclasses.dataclass
class Received:
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    audio_bytes: int = 0

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def receive_until(ws: WebSocketTestSession, done: Callable[[dict[str, Any]], bool], got: Received) -> None:
    """Read events (and count binary audio) until `done(event)`; an audio frame is {"type": "<audio>"}."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed: {message}")
        if message.get("bytes") is not None:
            got.audio_bytes += len(message["bytes"])
            got.events.append({"type": "<audio>"})
            if done(got.events[-1]):
                return
            continue
        event = json.loads(message["text"])
        got.events.append(event)
        if event["type"] == "error" and not done(event):
            raise AssertionError(f"error event: {event}")
        if done(event):
            return


def close_of(ws: WebSocketTestSession) -> tuple[dict[str, Any] | None, int]:
    """The error event the server sent, and its close code."""
    error = None
    while True:
        try:
            message = ws.receive()
        except WebSocketDisconnect as e:
            return error, e.code
        if message["type"] == "websocket.close":
            return error, int(message.get("code", 1000))
        if message.get("text"):
            event = json.loads(message["text"])
            if event["type"] == "error":
                error = event


def realtime_client(services: Services, tmp: Path, chat_tokens: int = 24, **limits: Any) -> TestClient:
    """An app whose realtime service has its own limits (and LLM reply length)."""
    settings = make_settings(tmp, **limits)
    custom = realtime_services(services, settings, chat_tokens)
    return TestClient(create_app(settings, custom), raise_server_exceptions=False)


@pytest.fixture
def rt(services: Services, tmp_path: Path) -> Iterator[TestClient]:
    with realtime_client(services, tmp_path) as client:
        yield client


def start(ws: WebSocketTestSession, **fields: Any) -> dict[str, Any]:
    ws.send_text(json.dumps({"type": "start", "sample_rate": 16000, **fields}))
    ready = ws.receive_json()
    assert ready["type"] == "ready", ready
    return ready


def test_a_spoken_turn_gets_a_transcript_a_reply_and_audio(
    rt: TestClient, services: Services, speech: bytes
) -> None:
    with rt.websocket_connect("/ws/conversation") as ws:
        ready = start(ws)
        assert ready["output_sample_rate"] == 24000
        # A pause long enough for the transcription to run in the trailing silence (as it does
        # when a person stops talking), then the rest of the silence that ends the turn.
        send_audio(ws, silence(0.5) + speech + silence(0.1))
        time.sleep(2.0)
        send_audio(ws, silence(0.9))
        got = Received()
        receive_until(ws, lambda e: e["type"] == "turn_end", got)
        ws.send_text(json.dumps({"type": "stop"}))
        assert ws.receive_json()["type"] == "session_end"

    types = [t for i, t in enumerate(got.types) if t != "<audio>" or got.types[i - 1] != "<audio>"]
    # A partial transcript (`transcript_delta`) may come while the speech is still being heard,
    # when the STT model is idle at that moment: a courtesy, not part of the turn's order.
    turn = [t for t in types if t != "transcript_delta"]
    assert turn[:3] == ["speech_start", "speech_end", "transcript"], types
    assert "transcript_delta" not in types[types.index("speech_end") :], types
    assert types[-1] == "turn_end" and "reply_delta" in types
    first_audio = types.index("<audio>")
    assert types[first_audio - 1] == "audio_start" or "audio_start" in types[:first_audio]
    transcript = next(e for e in got.events if e["type"] == "transcript")
    assert word_error_rate(SENTENCE, transcript["text"]) <= 0.2, transcript["text"]
    audio_start = next(e for e in got.events if e["type"] == "audio_start")
    assert got.audio_bytes / 2 / audio_start["sample_rate"] > 0.5  # over half a second of reply
    end = got.events[-1]
    deltas = "".join(e["text"] for e in got.events if e["type"] == "reply_delta")
    assert deltas.strip() == end["reply"]
    assert {"stt_ms", "llm_first_token_ms", "first_audio_ms", "tts_ms", "total_ms"} <= set(end["timings"])
    # The transcription's own time, although it was ready before the turn ended.
    assert end["timings"]["stt_ms"] > 20, end["timings"]
    turns = services.history.store.turns(ready["conversation_id"])
    assert [t.role for t in turns] == ["user", "assistant"] and turns[1].text == end["reply"]


def test_barge_in_stops_the_reply_and_keeps_what_was_said(services: Services, tmp_path: Path) -> None:
    """A long reply (up to 300 tokens, tens of seconds to generate here) is cut by new speech: the
    LLM worker goes idle at once, the reply is stored as interrupted, and the new speech is answered."""
    request = services.tts.backend.synthesize(
        SynthesisRequest("Tell me a very long story about a brave knight and a dragon.")
    )
    ask = pcm16(resample(request, 16000).samples)
    cut_in = pcm16(decode_audio((DATA / "speech.wav").read_bytes(), 16000).samples)
    with (
        realtime_client(services, tmp_path, chat_tokens=300) as client,
        client.websocket_connect("/ws/conversation") as ws,
    ):
        ready = start(ws)
        send_audio(ws, silence(0.3) + ask + silence(0.8))
        got = Received()
        receive_until(ws, lambda e: e["type"] == "<audio>", got)  # the reply is being spoken
        assert services.chat.worker.pending == 1  # ... and still being generated

        send_audio(ws, cut_in)
        receive_until(ws, lambda e: e["type"] == "interrupted", got)
        deadline = time.monotonic() + 3
        while services.chat.worker.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.chat.worker.pending == 0, (
            "the LLM kept generating after the barge-in",
            [t for t in got.types if t not in ("reply_delta", "<audio>")][-12:],
        )
        assert "turn_end" not in got.types

        send_audio(ws, silence(1.0))
        receive_until(ws, lambda e: e["type"] == "turn_end", got)

    transcripts = [e["text"] for e in got.events if e["type"] == "transcript"]
    assert len(transcripts) == 2 and word_error_rate(SENTENCE, transcripts[1]) <= 0.2
    turns = services.history.store.turns(ready["conversation_id"])
    assert [(t.role, t.interrupted) for t in turns] == [
        ("user", False),
        ("assistant", True),
        ("user", False),
        ("assistant", False),
    ]
    interrupted = next(e for e in got.events if e["type"] == "interrupted")
    assert turns[1].text == interrupted["said"]
    assert len(turns[1].text) < 600  # a piece or two, not 300 tokens' worth
    # The cut falls between words: what is stored is the first words of those spoken, whole.
    first_reply = got.events[: got.events.index(interrupted)]
    spoken = [w["word"] for e in first_reply if e["type"] == "audio_words" for w in e["words"]]
    letters = [re.sub(r"\W", "", word).lower() for word in spoken]
    said = re.sub(r"\W", "", interrupted["said"]).lower()
    prefixes = {"".join(letters[:k]) for k in range(len(letters) + 1)}
    assert said in prefixes, (interrupted["said"], spoken)


def test_speech_during_the_last_turns_transcription_keeps_that_turn(
    services: Services, tmp_path: Path, speech: bytes
) -> None:
    """The user speaks again while the turn they have just ended is still waiting to be transcribed
    (the STT model is held busy until the new speech has started: the timing a slow or queued
    transcription gives). That turn is not dropped: its transcript comes and is stored, the client
    is told its reply was cut with nothing said, and the new speech is answered as the next turn,
    after it."""
    gate = threading.Event()
    holder = threading.Thread(target=lambda: asyncio.run(services.stt.worker.run(gate.wait, 60)))
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while services.stt.worker.load()[0] == 0:  # the STT model is busy
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with (
            realtime_client(services, tmp_path) as client,
            client.websocket_connect("/ws/conversation") as ws,
        ):
            # Turns ended by silence: the first must end before its words are known.
            ready = start(ws, turn_detection="silence")
            send_audio(ws, silence(0.3) + speech + silence(0.8) + speech)
            got = Received()
            receive_until(ws, lambda e: got.types.count("speech_start") == 2, got)
            assert got.types == ["speech_start", "speech_end", "speech_start"], got.types
            gate.set()  # the first turn is transcribed now, while the second is being spoken
            send_audio(ws, silence(1.0))
            receive_until(ws, lambda e: e["type"] == "turn_end", got)
    finally:
        gate.set()
        holder.join()

    assert "error" not in got.types
    transcripts = [i for i, e in enumerate(got.events) if e["type"] == "transcript"]
    assert len(transcripts) == 2, got.types
    for index in transcripts:
        assert word_error_rate(SENTENCE, got.events[index]["text"]) <= 0.2, got.events[index]
    cut = got.types.index("interrupted")
    assert transcripts[0] < cut < transcripts[1] and got.events[cut]["said"] == ""
    assert "reply_delta" in got.types[transcripts[1] :]
    turns = services.history.store.turns(ready["conversation_id"])
    assert [(t.role, t.interrupted) for t in turns] == [
        ("user", False),
        ("user", False),
        ("assistant", False),
    ]
    assert [t.text for t in turns[:2]] == [got.events[i]["text"] for i in transcripts]
    assert turns[2].text == got.events[-1]["reply"]


def test_a_client_that_vanishes_mid_turn_frees_the_models(
    rt: TestClient, services: Services, speech: bytes
) -> None:
    with rt.websocket_connect("/ws/conversation") as ws:
        ready = start(ws)
        send_audio(ws, speech + silence(0.8))
        receive_until(ws, lambda e: e["type"] == "transcript", Received())
    deadline = time.monotonic() + 5
    workers = (services.stt.worker, services.chat.worker, services.tts.worker)
    while any(w.pending for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [w.pending for w in workers] == [0, 0, 0]
    turns = services.history.store.turns(ready["conversation_id"])
    assert turns and turns[0].role == "user"  # what the user said is kept
    # The server is unaffected: a new session works.
    with rt.websocket_connect("/ws/conversation") as ws:
        start(ws)


@pytest.mark.parametrize(
    ("first", "code", "close_code"),
    [
        (b"\x00\x01", "protocol_error", 1008),  # audio before start
        ("not json", "protocol_error", 1008),
        ('{"no": "type"}', "protocol_error", 1008),
        ('{"type": "dance"}', "protocol_error", 1008),
        ('{"type": "start", "sample_rate": 12345}', "invalid_sample_rate", 1008),
        ('{"type": "start", "sample_rate": "16000"}', "invalid_sample_rate", 1008),
        ('{"type": "start", "voice": "Nobody"}', "not_found", 1008),
        ('{"type": "start", "conversation_id": "../../etc"}', "invalid_input", 1008),
        ('{"type": "start", "language": "xx"}', "invalid_input", 1008),
        ('{"type": "start", "turn_detection": "telepathy"}', "invalid_turn_detection", 1008),
        ('{"type": "start", "turn_detection": ["semantic"]}', "invalid_turn_detection", 1008),
    ],
)
def test_protocol_errors_end_the_session_with_an_error_event(
    rt: TestClient, first: str | bytes, code: str, close_code: int
) -> None:
    with rt.websocket_connect("/ws/conversation") as ws:
        if isinstance(first, bytes):
            ws.send_bytes(first)
        else:
            ws.send_text(first)
        error, closed = close_of(ws)
    assert error is not None and error["code"] == code and error["message"]
    assert closed == close_code


def test_bad_frames_after_start_end_the_session(rt: TestClient) -> None:
    with rt.websocket_connect("/ws/conversation") as ws:
        start(ws)
        ws.send_bytes(b"\x00\x01\x02")  # half a sample
        error, closed = close_of(ws)
    assert error is not None and error["code"] == "invalid_audio" and closed == 1008
    with rt.websocket_connect("/ws/conversation") as ws:
        start(ws)
        ws.send_text(json.dumps({"type": "start"}))
        error, closed = close_of(ws)
    assert error is not None and "already" in error["message"] and closed == 1008


def test_limits_frame_size_idle_and_sessions(services: Services, tmp_path: Path) -> None:
    with realtime_client(
        services, tmp_path, ws_max_frame_bytes=4096, ws_idle_timeout_s=0.5, ws_max_sessions=1
    ) as client:
        with client.websocket_connect("/ws/conversation") as ws:
            start(ws)
            ws.send_bytes(bytes(4098))
            error, closed = close_of(ws)
        assert error is not None and error["code"] == "frame_too_large" and closed == 1009

        with client.websocket_connect("/ws/conversation") as ws:
            start(ws)
            error, closed = close_of(ws)  # sends nothing more
        assert error is not None and error["code"] == "idle_timeout" and closed == 1000

        with client.websocket_connect("/ws/conversation") as first:
            start(first)
            with client.websocket_connect("/ws/conversation") as second:
                error, closed = close_of(second)
            assert error is not None and error["code"] == "overloaded" and closed == 1013
            first.send_text(json.dumps({"type": "stop"}))
            assert first.receive_json()["type"] == "session_end"


def _trimmed(pcm: bytes) -> bytes:
    """The clip without its leading silence (Piper pads its speech with some)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    voiced = np.flatnonzero(np.abs(samples) > 300)
    return samples[voiced[0] :].tobytes() if voiced.size else pcm


def _speak_and_pause(
    ws: WebSocketTestSession, services: Services, speech: bytes
) -> tuple[dict[str, Any], Received]:
    """Start a session whose turns end by silence, speak, and pause (less audio than
    VAD_MIN_SILENCE_MS, but long enough in time for a reply to begin): the LLM must be generating
    by then."""
    ready = start(ws, turn_detection="silence")
    before = _tokens(services)
    send_audio(ws, silence(0.3) + speech + silence(0.1))
    got = Received()
    receive_until(ws, lambda e: e["type"] == "speech_start", got)
    time.sleep(2.5)
    assert _tokens(services) > before, "no reply was begun during the pause"
    return ready, got


def _tokens(services: Services) -> int:
    backend = services.chat.backend
    assert isinstance(backend, LlamaCppChatBackend)
    return backend.tokens_generated()


def test_the_reply_begins_in_the_trailing_silence_and_is_stored_once(
    rt: TestClient, services: Services, speech: bytes
) -> None:
    """The user stops; during the silence (before the turn is known to have ended) the LLM is
    already answering, and nothing reaches the client or the store. The turn then takes that reply
    over: its audio comes at once, and the turn is stored exactly once."""
    with rt.websocket_connect("/ws/conversation") as ws:
        ready, got = _speak_and_pause(ws, services, speech)
        assert services.history.store.turns(ready["conversation_id"]) == []  # nothing stored yet
        send_audio(ws, silence(0.9))
        receive_until(ws, lambda e: e["type"] == "turn_end", got)
    assert got.types[:3] == ["speech_start", "speech_end", "transcript"], got.types[:4]
    end = got.events[-1]
    # The first audio was ready when the turn ended: it did not wait for STT, LLM and TTS then.
    assert end["timings"]["first_audio_ms"] == 0.0, end["timings"]
    turns = services.history.store.turns(ready["conversation_id"])
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[1].text == end["reply"] and not turns[1].interrupted
    deltas = "".join(e["text"] for e in got.events if e["type"] == "reply_delta")
    assert deltas.strip() == end["reply"]


def test_a_preemptive_reply_abandoned_by_resumed_speech_leaves_nothing_stored(
    rt: TestClient, services: Services, speech: bytes
) -> None:
    """A pause long enough for a reply to begin, then the user goes on: that reply is cancelled
    (the LLM stops, nothing is sent or stored); the turn that finally ends is answered and stored
    once, with the whole utterance as the user's words."""
    with rt.websocket_connect("/ws/conversation") as ws:
        ready, got = _speak_and_pause(ws, services, speech)
        send_audio(ws, _trimmed(speech))  # the user goes on speaking, before the silence ends the turn
        deadline = time.monotonic() + 5
        while services.chat.worker.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.chat.worker.pending == 0, "the abandoned reply kept generating"
        stopped = _tokens(services)
        time.sleep(0.5)
        assert _tokens(services) == stopped
        assert services.history.store.turns(ready["conversation_id"]) == []
        send_audio(ws, silence(1.0))
        receive_until(ws, lambda e: e["type"] == "turn_end", got)
    assert got.types.count("speech_end") == 1 and got.types.count("transcript") == 1
    assert "reply_delta" not in got.types[: got.types.index("speech_end")]
    transcript = next(e for e in got.events if e["type"] == "transcript")
    assert word_error_rate(f"{SENTENCE} {SENTENCE}", transcript["text"]) <= 0.2, transcript["text"]
    turns = services.history.store.turns(ready["conversation_id"])
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[0].text == transcript["text"] and turns[1].text == got.events[-1]["reply"]


def test_preemptive_replies_can_be_turned_off(services: Services, tmp_path: Path, speech: bytes) -> None:
    with (
        realtime_client(services, tmp_path, ws_preemptive_replies=False) as client,
        client.websocket_connect("/ws/conversation") as ws,
    ):
        start(ws, turn_detection="silence")
        before = _tokens(services)
        send_audio(ws, silence(0.3) + speech + silence(0.1))
        receive_until(ws, lambda e: e["type"] == "speech_start", Received())
        time.sleep(2.0)
        assert _tokens(services) == before  # the transcript may be ready; no reply is begun
        send_audio(ws, silence(0.9))
        receive_until(ws, lambda e: e["type"] == "turn_end", Received())
        assert _tokens(services) > before


def _spoken_at_real_time(client: TestClient, speech: bytes) -> Received:
    """A microphone's pace: 20 ms frames every 20 ms, then the silence that ends the turn."""
    with client.websocket_connect("/ws/conversation") as ws:
        start(ws)
        began = time.perf_counter()
        pcm = silence(0.3) + speech + silence(1.0)
        for index, offset in enumerate(range(0, len(pcm), FRAME)):
            ws.send_bytes(pcm[offset : offset + FRAME])
            time.sleep(max(0.0, began + (index + 1) * 0.02 - time.perf_counter()))
        got = Received()
        receive_until(ws, lambda e: e["type"] == "turn_end", got)
        ws.send_text(json.dumps({"type": "interrupt"}))
    return got


def test_partial_transcripts_come_while_the_user_speaks(
    services: Services, tmp_path: Path, speech: bytes
) -> None:
    with realtime_client(services, tmp_path, ws_partial_transcript_s=0.8) as client:
        got = _spoken_at_real_time(client, speech)
    types = got.types
    partials = [e["text"] for e in got.events if e["type"] == "transcript_delta"]
    assert partials, types
    # All of them between the start of speech and its end, before the final transcript.
    first, last = types.index("transcript_delta"), len(types) - 1 - types[::-1].index("transcript_delta")
    assert types.index("speech_start") < first and last < types.index("speech_end") < types.index(
        "transcript"
    )
    final = next(e["text"] for e in got.events if e["type"] == "transcript")
    assert word_error_rate(SENTENCE, final) <= 0.2, final
    sentence = SENTENCE.split()
    for text in partials:
        # Each is the utterance so far: words from the start of the sentence (a decoder may still
        # change the last word or two), never more than was said.
        words = text.split()
        assert 0 < len(words) <= len(sentence) + 1, text
        assert word_error_rate(" ".join(sentence[: len(words)]), text) <= 0.5, text


def test_partial_transcripts_can_be_turned_off(services: Services, tmp_path: Path, speech: bytes) -> None:
    with realtime_client(services, tmp_path, ws_partial_transcript_s=0) as client:
        got = _spoken_at_real_time(client, speech)
    assert "transcript_delta" not in got.types
    assert "transcript" in got.types
