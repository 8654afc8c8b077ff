"""OpenAI's Realtime API over WebRTC (POST /v1/realtime/calls), driven by an aiortc peer as a
browser would be: an SDP offer through the official `openai` SDK (`client.realtime.calls.create`),
the microphone played from a recording, events on the `oai-events` data channel, the reply heard
on the answer's audio track, on the real embedded models. Bad offers and peers that never connect
are refused or freed, without leaking tasks or sockets."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError
from openai import AsyncOpenAI

from backend.app.audio.decode import decode_audio
from backend.app.audio.types import Audio
from backend.app.container import Services
from backend.app.core.values import SynthesisRequest
from backend.app.main import create_app
from backend.app.text.wer import word_error_rate
from tests.api.test_openai_realtime import SERVER_EVENTS, Server, _serve, heard
from tests.conftest import DATA, SENTENCE, make_settings, realtime_services
from tests.server import in_thread

RATE = 16000


def recording(path: Path, audio: Audio, before_s: float = 0.5, after_s: float = 3.0) -> Path:
    samples = np.concatenate(
        [np.zeros(int(RATE * before_s), np.float32), audio.samples, np.zeros(int(RATE * after_s), np.float32)]
    )
    sf.write(path, samples, RATE)
    return path


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("webrtc"), chat_tokens=24)


class Peer:
    """A browser's side of a call: the microphone from a file, the events channel, the reply's
    audio collected as 16 kHz mono."""

    def __init__(self, microphone: Path | None) -> None:
        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(str(microphone)) if microphone else None
        if self.player is not None and self.player.audio is not None:
            self.pc.addTrack(self.player.audio)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.heard: list[np.ndarray] = []
        self.tasks: list[asyncio.Task[None]] = []

        @self.channel.on("message")
        def on_message(message: str) -> None:
            event = json.loads(message)
            SERVER_EVENTS.validate_python(event)  # the SDK's shape, strictly
            self.events.append(event)
            self.arrived.set()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.create_task(self._hear(track)))

    async def _hear(self, track: Any) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                self.heard.append(out.to_ndarray().reshape(-1).copy())

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def until(self, kind: str, within: float = 90, after: int = 0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for event in self.events[after:]:
                    if event["type"] == kind:
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


def sdk(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-anything", max_retries=0)


async def _connect(server: Server, peer: Peer, session: dict[str, Any] | None = None) -> str:
    raw = await sdk(server).realtime.calls.with_raw_response.create(
        sdp=await peer.offer(), session=session or {"type": "realtime"}
    )
    assert raw.status_code == 201 and raw.headers["content-type"].startswith("application/sdp")
    location = raw.headers["location"]
    assert location.startswith("/v1/realtime/calls/")
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=raw.text, type="answer"))
    return location.rsplit("/", 1)[1]


def test_a_spoken_question_gets_a_spoken_answer_over_webrtc(server: Server, tmp_path: Path) -> None:
    question = decode_audio((DATA / "speech.wav").read_bytes(), RATE)
    microphone = recording(tmp_path / "mic.wav", question)

    async def run() -> Peer:
        peer = Peer(microphone)
        try:
            await _connect(
                server,
                peer,
                {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
            )
            await peer.until("session.created")
            await peer.until("response.done")
            await peer.until("output_audio_buffer.stopped")
            await asyncio.sleep(0.3)
        finally:
            await peer.close()
        return peer

    peer = asyncio.run(run())
    kinds = [e["type"] for e in peer.events]
    assert "response.output_audio.delta" not in kinds  # the audio came on the track
    order = [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "output_audio_buffer.started",
        "response.done",
        "output_audio_buffer.stopped",
    ]
    positions = [kinds.index(kind) for kind in order]
    assert positions == sorted(positions), kinds
    transcript = next(e for e in peer.events if e["type"].endswith("input_audio_transcription.completed"))
    assert word_error_rate(SENTENCE, transcript["transcript"]) <= 0.25, transcript["transcript"]
    done = next(e for e in peer.events if e["type"] == "response.done")["response"]
    said = done["output"][0]["content"][0]["transcript"]
    started = next(e for e in peer.events if e["type"] == "output_audio_buffer.started")
    assert started["response_id"] == done["id"]
    # What the peer heard on the track (Opus, decoded by aiortc) says the reply.
    reply = Audio(np.concatenate(peer.heard), RATE)
    assert word_error_rate(said, heard(server.services, reply)) <= 0.4


@pytest.fixture(scope="module")
def long_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("webrtc-long"), chat_tokens=300)


def test_output_audio_buffer_clear_cuts_the_reply_at_once(long_server: Server, tmp_path: Path) -> None:
    tts = long_server.services.tts.backend
    ask = tts.synthesize(SynthesisRequest("Tell me a very long story about a dragon."))
    microphone = recording(tmp_path / "ask.wav", decode_audio(_wav(ask), RATE), after_s=12)

    async def run() -> tuple[Peer, int]:
        peer = Peer(microphone)
        try:
            await _connect(long_server, peer)
            started = await peer.until("output_audio_buffer.started")
            await asyncio.sleep(1.5)
            index = len(peer.events)
            peer.send({"type": "output_audio_buffer.clear"})
            cleared = await peer.until("output_audio_buffer.cleared", after=index)
            assert cleared["response_id"] == started["response_id"]
            done = await peer.until("response.done", after=index)
            assert done["response"]["status"] == "cancelled"
            return peer, index
        finally:
            await peer.close()

    peer, index = asyncio.run(run())
    done = next(e for e in peer.events[index:] if e["type"] == "response.done")["response"]
    conversation = done["conversation_id"]
    turns = long_server.services.history.store.turns(conversation)
    told = [(t.role, t.interrupted, t.text[:40]) for t in turns]
    assert turns[-1].role == "assistant" and turns[-1].interrupted, told
    # Stored as far as it was played: about 1.5 s of speech, a few words, not the whole story.
    assert 1 <= len(turns[-1].text.split()) <= 12, turns[-1].text


def _wav(audio: Audio) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, audio.samples, audio.sample_rate, format="WAV")
    return buffer.getvalue()


def _open_sockets() -> int:
    fds = Path(f"/proc/{os.getpid()}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


@pytest.mark.parametrize(
    ("content_type", "body", "status", "param"),
    [
        ("application/sdp", b"", 400, "sdp"),
        ("application/sdp", b"hello, I am not SDP", 400, "sdp"),
        ("application/sdp", b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "sdp"),  # no audio
        ("application/sdp", b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=garbage\r\n", 400, "sdp"),
        ("application/sdp", b"v=0\r\n" + b"a=x\r\n" * 20000, 400, "sdp"),  # over 64 KiB
        ("application/json", b'{"sdp": "v=0"}', 400, "sdp"),  # OpenAI's shape: a 400
    ],
)
def test_bad_offers_are_refused_with_a_clear_error(
    server: Server, content_type: str, body: bytes, status: int, param: str
) -> None:
    response = httpx.post(
        f"{server.url}/v1/realtime/calls", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["param"] == param


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/sdp", b"", 422),
        ("application/sdp", b"v=0\r\ns=-\r\n", 422),  # no audio
        ("application/sdp", b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", 422),  # no ICE credentials
        ("text/plain", b"v=0", 415),
    ],
)
def test_the_pages_calls_refuse_bad_offers_in_our_shape(
    server: Server, content_type: str, body: bytes, status: int
) -> None:
    headers = {"content-type": content_type}
    response = httpx.post(f"{server.url}/conversation/calls", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert httpx.delete(f"{server.url}/conversation/calls/call_nope").status_code == 404


def test_an_offer_with_no_codec_in_common_is_refused(server: Server) -> None:
    async def run() -> httpx.Response:
        peer = Peer(None)
        try:
            offer = await peer.offer()
        finally:
            await peer.close()
        for codec in ("opus", "G722", "PCMU", "PCMA"):  # only linear PCM left, which we do not speak
            offer = offer.replace(f" {codec}/", " L16/")
        async with httpx.AsyncClient() as client:
            headers = {"content-type": "application/sdp"}
            return await client.post(f"{server.url}/v1/realtime/calls", content=offer, headers=headers)

    response = asyncio.run(run())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "sdp"


def test_a_session_that_is_not_valid_is_refused(server: Server) -> None:
    async def run() -> httpx.Response:
        peer = Peer(None)
        try:
            files = {
                "sdp": (None, await peer.offer(), "application/sdp"),
                "session": (None, json.dumps({"type": "realtime", "colour": "blue"}), "application/json"),
            }
            async with httpx.AsyncClient() as client:
                return await client.post(f"{server.url}/v1/realtime/calls", files=files)
        finally:
            await peer.close()

    response = asyncio.run(run())
    assert response.status_code == 400 and response.json()["error"]["param"] == "session.colour"


def test_calls_that_never_connect_are_bounded_and_freed(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.app.api.protocols import webrtc_call as webrtc

    monkeypatch.setattr(webrtc, "CONNECT_TIMEOUT_S", 5.0)
    config = make_settings(tmp_path, ws_max_sessions=4)
    custom = realtime_services(services, config, 24)
    app = create_app(config, custom)

    async def tasks() -> int:  # the server loop's tasks, counted in that loop
        return len(asyncio.all_tasks())

    app.add_api_route("/_tasks", tasks)
    with in_thread(app) as port:
        limited = Server(f"http://127.0.0.1:{port}", custom)
        realtime = custom.realtime
        before = _open_sockets()
        tasks_before = httpx.get(f"{limited.url}/_tasks").json()
        # Offers whose peers never go on to connect hold a session each, WS_MAX_SESSIONS at most.
        assert asyncio.run(_offers(limited, 8)) == [201] * 4 + [503] * 4
        assert asyncio.run(_wait_for(lambda: realtime.active == 0, 15)), f"{realtime.active} still open"
        # Then a hundred more, freed as fast: never a 5xx other than the 503 of a full server.
        monkeypatch.setattr(webrtc, "CONNECT_TIMEOUT_S", 0.5)
        statuses = asyncio.run(_offers(limited, 100))
        assert set(statuses) <= {201, 503} and 201 in statuses
        assert asyncio.run(_wait_for(lambda: realtime.active == 0, 15)), f"{realtime.active} still open"
        assert asyncio.run(_wait_for(lambda: _open_sockets() <= before + 2, 15)), (before, _open_sockets())
        tasks_after = httpx.get(f"{limited.url}/_tasks").json()
        assert tasks_after <= tasks_before + 1, (tasks_before, tasks_after)
        assert asyncio.run(_offers(limited, 1)) == [201]  # freed: a new call is answered again


async def _offers(server: Server, count: int) -> list[int]:
    statuses, peers = [], []
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(count):
                peer = Peer(None)
                peers.append(peer)
                response = await client.post(
                    f"{server.url}/v1/realtime/calls",
                    content=await peer.offer(),
                    headers={"content-type": "application/sdp"},
                )
                statuses.append(response.status_code)
    finally:
        for peer in peers:
            await peer.close()
    return statuses


async def _wait_for(condition: Any, within: float) -> bool:
    for _ in range(int(within * 10)):
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()
