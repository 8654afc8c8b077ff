"""Telephone audio: G.711 (µ-law, A-law) on /v1/realtime through the `openai` SDK, and phone calls
over Twilio's Media Streams protocol (/phone/twilio) driven by a client written from Twilio's
documentation that plays a recorded call, on the real embedded models. The test side codes G.711
with Python's own `audioop`, independently of the server's FFmpeg coder."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from backend.app.audio.decode import decode_audio
from backend.app.audio.types import Audio
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest
from backend.app.text.wer import word_error_rate
from tests.api.test_openai_realtime import Events, Server, _serve, heard, sdk
from tests.conftest import DATA, SENTENCE

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the stdlib's G.711, removed in 3.13: the tests' independent coder

LAWS = {
    "pcmu": (audioop.lin2ulaw, audioop.ulaw2lin),
    "pcma": (audioop.lin2alaw, audioop.alaw2lin),
}


def to_law(audio: Audio, law: str) -> bytes:
    samples = decode_audio(_wav(audio), 8000).samples
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return LAWS[law][0](pcm, 2)


def from_law(data: bytes, law: str) -> Audio:
    pcm = LAWS[law][1](data, 2)
    return Audio(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, 8000)


def _wav(audio: Audio) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio.samples, audio.sample_rate, format="WAV")
    return buffer.getvalue()


def silence(seconds: float, law: str) -> bytes:
    return LAWS[law][0](bytes(int(8000 * seconds) * 2), 2)


@pytest.fixture(scope="module")
def question() -> Audio:
    return decode_audio((DATA / "speech.wav").read_bytes(), 16000)


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("phone"), chat_tokens=24)


# --- G.711 on /v1/realtime --------------------------------------------------------------------------


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_a_spoken_turn_in_g711_both_ways(server: Server, question: Audio, law: str) -> None:
    kind = f"audio/{law}"
    audio_in = to_law(question, law)

    async def run() -> Events:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await events.of("conversation.created")
            await connection.session.update(
                session={
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "format": {"type": kind},
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad"},
                        },
                        "output": {"format": {"type": kind}},
                    },
                }
            )
            session = (await events.of("session.updated"))["session"]
            assert session["audio"]["input"]["format"] == {"type": kind}
            assert session["audio"]["output"]["format"] == {"type": kind}
            # A later update that names no format keeps the one in use.
            await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
            session = (await events.of("session.updated"))["session"]
            assert session["audio"]["input"]["format"] == {"type": kind}
            assert session["audio"]["output"]["format"] == {"type": kind}
            # 100 ms appends at real-time pace, one of an odd size (G.711 has one byte a sample).
            stream = silence(0.5, law) + audio_in + silence(1.5, law)
            for offset in range(0, len(stream), 801):
                chunk = stream[offset : offset + 801]
                await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
                await asyncio.sleep(0.1)
            await events.of("response.done")
            # A response asking for another format is refused, not switched to.
            await connection.send_raw(
                json.dumps(
                    {
                        "type": "response.create",
                        "response": {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}},
                    }
                )
            )
            error = await events.of("error")
            assert error["error"]["param"] == "response.audio.output.format"
            return events

    events = asyncio.run(run())
    transcript = next(e for e in events.all if e["type"].endswith("input_audio_transcription.completed"))
    assert word_error_rate(SENTENCE, transcript["transcript"]) <= 0.25, transcript["transcript"]
    done = next(e for e in events.all if e["type"] == "response.done")["response"]
    assert done["status"] == "completed"
    assert done["audio"]["output"]["format"] == {"type": kind}
    deltas = [base64.b64decode(e["delta"]) for e in events.all if e["type"] == "response.output_audio.delta"]
    assert all(len(d) <= 1600 for d in deltas)  # 200 ms of 8 kHz, one byte a sample
    said = done["output"][0]["content"][0]["transcript"]
    reply = from_law(b"".join(deltas), law)
    assert reply.duration > 0.5
    assert word_error_rate(said, heard(server.services, reply)) <= 0.4


# --- Twilio Media Streams ---------------------------------------------------------------------------


class TwilioClient:
    """Twilio's side of a bidirectional Media Stream, as its documentation describes it: after
    `connected` and `start`, the caller's audio in 20 ms `media` messages (base64 µ-law, 8 kHz,
    with sequence numbers, chunk numbers and timestamps); the server's `media` queued and played at
    real time, each `mark` echoed when the audio before it has been played, `clear` empties the
    queue (its pending marks echoed at once), and `stop` at the end."""

    def __init__(self, ws: Any, parameters: dict[str, str]) -> None:
        self.ws = ws
        self.parameters = parameters
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.sequence = 0
        self.chunk = 0
        self.started = time.monotonic()
        self.queue: deque[bytes | str] = deque()
        self.played = bytearray()
        self.received: list[dict[str, Any]] = []
        self.echoed: list[str] = []
        self.clears = 0
        self.pending_echoes: list[str] = []
        self.clock = time.monotonic()

    async def send(self, event: str, **fields: Any) -> None:
        self.sequence += 1
        await self.ws.send(json.dumps({"event": event, "sequenceNumber": str(self.sequence), **fields}))

    async def open(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.send(
            "start",
            streamSid=self.stream_sid,
            start={
                "accountSid": "AC" + secrets.token_hex(16),
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            },
        )

    async def speak(self, ulaw: bytes) -> None:
        """The caller's audio, 160 bytes (20 ms) a message, at real-time pace."""
        for offset in range(0, len(ulaw), 160):
            self.chunk += 1
            await self.send(
                "media",
                streamSid=self.stream_sid,
                media={
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(round((time.monotonic() - self.started) * 1000)),
                    "payload": base64.b64encode(ulaw[offset : offset + 160]).decode(),
                },
            )
            await self.play(0.02)

    async def play(self, seconds: float) -> None:
        """Read what the server sent for `seconds`, playing the queue at real time."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                raw = await asyncio.wait_for(self.ws.recv(), min(left, 0.02))
            except TimeoutError:
                raw = None
            if raw is not None:
                self.take(json.loads(raw))
            await self.play_out()

    def take(self, message: dict[str, Any]) -> None:
        assert message["streamSid"] == self.stream_sid
        self.received.append(message)
        if message["event"] == "media":
            self.queue.append(base64.b64decode(message["media"]["payload"]))
        elif message["event"] == "mark":
            self.queue.append(message["mark"]["name"])
        elif message["event"] == "clear":
            self.clears += 1
            marks = [item for item in self.queue if isinstance(item, str)]
            self.queue.clear()
            self.pending_echoes.extend(marks)
        else:
            raise AssertionError(f"not a Media Streams message: {message}")

    async def play_out(self) -> None:
        """Play what real time allows since the last call (nothing plays while the queue is empty)."""
        now = time.monotonic()
        budget = int(8000 * (now - self.clock)) if self.queue else 0
        self.clock = now
        while self.queue and (budget > 0 or isinstance(self.queue[0], str)):
            head = self.queue[0]
            if isinstance(head, str):
                self.pending_echoes.append(self.queue.popleft())  # type: ignore[arg-type]
                continue
            take = head[:budget]
            self.played += take
            budget -= len(take)
            if len(take) == len(head):
                self.queue.popleft()
            else:
                self.queue[0] = head[len(take) :]
        while self.pending_echoes:
            name = self.pending_echoes.pop(0)
            self.echoed.append(name)
            await self.send("mark", streamSid=self.stream_sid, mark={"name": name})

    async def stop(self) -> None:
        await self.send(
            "stop", streamSid=self.stream_sid, stop={"accountSid": "AC", "callSid": self.call_sid}
        )


async def _call(url: str, parameters: dict[str, str], script: Any) -> TwilioClient:
    async with websockets.connect(url) as ws:
        client = TwilioClient(ws, parameters)
        await client.open()
        await script(client)
        await client.stop()
        return client


def _stream_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/phone/twilio"


def test_a_recorded_call_is_answered_over_the_media_stream(server: Server, question: Audio) -> None:
    ulaw = to_law(question, "pcmu")

    async def script(client: TwilioClient) -> None:
        await client.speak(silence(0.5, "pcmu") + ulaw + silence(1.0, "pcmu"))
        for _ in range(300):  # the reply: until its last mark is echoed (30 s at most)
            await client.play(0.1)
            if client.echoed and not client.queue and _quiet(client):
                break

    client = asyncio.run(_call(_stream_url(server), {}, script))
    kinds = [m["event"] for m in client.received]
    assert "media" in kinds and "mark" in kinds and "clear" not in kinds
    turns = server.services.history.store.turns(client.call_sid)  # stored under the CallSid
    assert [t.role for t in turns] == ["user", "assistant"]
    assert word_error_rate(SENTENCE, turns[0].text) <= 0.3, turns[0].text
    # What the caller heard (µ-law at 8 kHz, decoded by the test's own coder) says the reply.
    played = from_law(bytes(client.played), "pcmu")
    assert played.duration > 0.5
    assert word_error_rate(turns[1].text, heard(server.services, played)) <= 0.4
    # Every mark we were sent was echoed after its audio played, in order.
    sent = [m["mark"]["name"] for m in client.received if m["event"] == "mark"]
    assert client.echoed == sent


def _quiet(client: TwilioClient) -> bool:
    """Nothing has come from the server for a second (its reply is over)."""
    if not client.received:
        return False
    return len(client.played) >= sum(
        len(base64.b64decode(m["media"]["payload"])) for m in client.received if m["event"] == "media"
    )


@pytest.fixture(scope="module")
def long_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("phone-long"), chat_tokens=300)


def test_speaking_over_a_reply_clears_it_and_stores_what_was_heard(
    long_server: Server, question: Audio
) -> None:
    ulaw = to_law(question, "pcmu")
    tts = long_server.services.tts.backend
    ask = to_law(tts.synthesize(SynthesisRequest("Tell me a very long story about a dragon.")), "pcmu")
    heard_before: list[int] = []

    async def script(client: TwilioClient) -> None:
        await client.speak(silence(0.5, "pcmu") + ask + silence(1.0, "pcmu"))
        for _ in range(300):
            await client.play(0.1)
            if len(client.played) > 8000 * 1.5:  # 1.5 s of the reply heard
                break
        heard_before.append(len(client.played))
        await client.speak(ulaw + silence(1.0, "pcmu"))  # the caller speaks over it
        for _ in range(100):
            if client.clears:
                break
            await client.play(0.1)

    client = asyncio.run(_call(_stream_url(long_server), {}, script))
    assert client.clears >= 1
    turns = long_server.services.history.store.turns(client.call_sid)
    assert [(t.role, t.interrupted) for t in turns][:2] == [("user", False), ("assistant", True)]
    # Stored as far as the caller heard it: the marks echoed before the cut, within their spacing.
    heard_s = heard_before[0] / 8000
    word_count = len(turns[1].text.split())
    assert word_count >= 1, turns[1].text
    assert word_count <= 5 * (heard_s + 1.5), (turns[1].text, heard_s)  # ~3 words a second spoken


def test_what_is_not_twilio_is_skipped_and_the_call_goes_on(server: Server, question: Audio) -> None:
    ulaw = to_law(question, "pcmu")

    async def script(client: TwilioClient) -> None:
        await client.ws.send("not json")
        await client.ws.send(b"\x00\x01binary")
        await client.ws.send(json.dumps([1, 2]))
        await client.send("no-such-event", streamSid=client.stream_sid)
        await client.send("media", streamSid=client.stream_sid, media={"payload": "%%% not base64"})
        await client.send("media", streamSid=client.stream_sid, media={})
        await client.send("mark", streamSid=client.stream_sid, mark={"name": "not ours"})
        await client.send("dtmf", streamSid=client.stream_sid, dtmf={"track": "inbound_track", "digit": "1"})
        # µ-law frames of odd sizes
        stream = silence(0.5, "pcmu") + ulaw + silence(1.0, "pcmu")
        for offset in range(0, len(stream), 77):
            await client.send(
                "media",
                streamSid=client.stream_sid,
                media={
                    "track": "inbound",
                    "payload": base64.b64encode(stream[offset : offset + 77]).decode(),
                },
            )
            await client.play(77 / 8000)
        for _ in range(300):
            await client.play(0.1)
            if client.echoed and not client.queue and _quiet(client):
                break

    client = asyncio.run(_call(_stream_url(server), {}, script))
    turns = server.services.history.store.turns(client.call_sid)
    assert [t.role for t in turns] == ["user", "assistant"]
    assert word_error_rate(SENTENCE, turns[0].text) <= 0.3, turns[0].text


def test_a_stream_in_another_format_is_closed(server: Server) -> None:
    async def run() -> int | None:
        async with websockets.connect(_stream_url(server)) as ws:
            start = {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1},
            }
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(run()) == 1003


def test_a_stream_that_never_starts_is_closed(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.app.api.protocols.phone import twilio

    monkeypatch.setattr(twilio, "START_TIMEOUT_S", 1.0)

    async def run() -> int | None:
        async with websockets.connect(_stream_url(server)) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            try:
                while True:  # a client that keeps talking but never starts is still closed
                    await ws.send(json.dumps({"event": "connected"}))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.3)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None

    async def bounded() -> int | None:
        async with asyncio.timeout(20):
            try:
                return await run()
            except TimeoutError:
                raise AssertionError("still open") from None

    assert asyncio.run(bounded()) == 1000


def test_twiml_points_the_call_at_the_stream(server: Server) -> None:
    response = httpx.post(f"{server.url}/phone/twilio/twiml", data={"CallSid": "CA1", "From": "+15550100"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith("<?xml")
    assert f'<Stream url="{_stream_url(server)}"' in response.text
    assert "<Connect>" in response.text and "api_key" not in response.text


def test_phone_calls_with_api_keys(services: Services, tmp_path: Path, question: Audio) -> None:
    key = "sk-phone-" + secrets.token_hex(8)
    for keyed in _serve(services, tmp_path, chat_tokens=24, api_key=key):
        twiml = f"{keyed.url}/phone/twilio/twiml"
        refused = httpx.post(twiml)
        assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
        # Twilio sends the webhook's credentials as HTTP Basic (https://user:key@host/...).
        allowed = httpx.post(twiml, auth=("twilio", key))
        assert allowed.status_code == 200 and f'<Parameter name="api_key" value="{key}"' in allowed.text

        async def nothing(client: TwilioClient) -> None:
            await client.play(0.5)

        async def run(parameters: dict[str, str], url: str = _stream_url(keyed)) -> int | None:
            try:
                await _call(url, parameters, nothing)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
            return None

        assert asyncio.run(run({})) == 1008  # no key in the start message
        assert asyncio.run(run({"api_key": "wrong"})) == 1008
        assert asyncio.run(run({"api_key": key})) is None  # the call runs, and ends with its stop
