"""The Wyoming server (WYOMING_URI), driven by the `wyoming` library's own client against the real
app under uvicorn (its lifespan starts and stops the Wyoming server), on the real embedded models:
describe/info, speech to text at 16 kHz mono and 44.1 kHz stereo, text to speech whole and streamed
(decoded back through the STT), the LLM as a conversation agent over two turns, a full queue, and
malformed events, each of which closes its own connection and no other."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient, AsyncUnixClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from backend.app.api.protocols.wyoming.server import WyomingServer
from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.container import ServiceGate, Services
from backend.app.core.values import TranscribeOptions
from backend.app.core.worker import ModelWorker
from backend.app.main import create_app
from backend.app.services.stt import STTService
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA, SENTENCE, SYNTH_WER, make_settings
from tests.server import in_thread

STT_WER = 0.25
"""The recording is clean speech; tiny.en hears it almost word for word at any rate it arrives at."""


@dataclasses.dataclass
class Server:
    http: str
    port: int
    services: Services
    wyoming: WyomingServer


def _serve(services: Services, tmp: Path, **settings: Any) -> Iterator[Server]:
    """The app under uvicorn with its lifespan (which starts the Wyoming server on a free port)."""
    config = make_settings(tmp, wyoming_uri="tcp://127.0.0.1:0", **settings)
    app = create_app(config, services)
    with in_thread(app, lifespan="on") as port:
        assert app.state.wyoming is not None and app.state.wyoming.port
        yield Server(f"http://127.0.0.1:{port}", app.state.wyoming.port, services, app.state.wyoming)


@pytest.fixture(scope="module")
def wyoming(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("wyoming"), wyoming_idle_timeout_s=3)


@pytest.fixture(scope="module")
def speech() -> Audio:
    return decode_audio((DATA / "speech.wav").read_bytes(), 16_000)


def pcm(audio: Audio, rate: int, channels: int = 1) -> bytes:
    samples = resample(audio, rate).samples
    if channels > 1:  # each channel a little different, as a real stereo recording is
        samples = np.stack([samples * (1 - 0.2 * c) for c in range(channels)], axis=1).reshape(-1)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def read(client: AsyncClient, within: float = 120) -> Event:
    event = await asyncio.wait_for(client.read_event(), within)
    assert event is not None, "the server closed the connection"
    return event


async def until(client: AsyncTcpClient, *types: str, within: float = 120) -> tuple[list[Event], Event]:
    """Every event up to the first of `types` (which is returned apart)."""
    seen: list[Event] = []
    while True:
        event = await read(client, within)
        if event.type in types:
            return seen, event
        seen.append(event)


async def transcribe(
    port: int, audio: bytes, rate: int, channels: int, language: str | None = "en", step: int = 0
) -> list[Event]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        step = step or 2048 * channels
        for i in range(0, len(audio), step):
            chunk = AudioChunk(rate=rate, width=2, channels=channels, audio=audio[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        seen, stop = await until(client, TranscriptStop().event().type)
        return [*seen, stop]


def received_audio(events: list[Event]) -> Audio:
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks, "no audio"
    rate = chunks[0].rate
    assert all(c.rate == rate and c.width == 2 and c.channels == 1 for c in chunks)
    samples = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2").astype(np.float32) / 32768
    return Audio(samples, rate)


def heard(services: Services, audio: Audio) -> str:
    stt = services.stt.backend
    return stt.transcribe(resample(audio, stt.sample_rate), TranscribeOptions(language="en")).text


def test_describe_lists_three_programs_from_the_live_services(wyoming: Server) -> None:
    async def run() -> Info:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await read(client))

    info = asyncio.run(run())
    services = wyoming.services
    (asr,) = info.asr
    assert asr.installed and asr.version and asr.attribution.name
    assert asr.supports_transcript_streaming
    (model,) = asr.models
    assert model.installed and model.name == services.stt.backend.info.id
    assert model.languages == ["en"]  # the embedded tiny.en
    assert "faster-whisper" in model.attribution.url
    (tts,) = info.tts
    assert tts.installed and tts.supports_synthesize_streaming
    (voice,) = tts.voices  # the embedded voices clone nothing: their own, not the reference clips
    assert voice.name == services.tts.backend.info.id and voice.languages == ["en"]
    assert "hibari" in voice.attribution.url.lower()
    assert [speaker.name for speaker in voice.speakers or []] == ["heart", "joe"]
    (agent,) = info.handle
    assert agent.installed and agent.supports_handled_streaming
    assert agent.models[0].name == services.chat.backend.info.id and "en" in agent.models[0].languages


def test_a_cloning_engine_lists_the_voice_library_by_file_name(wyoming: Server) -> None:
    from backend.app.api.protocols.wyoming.info import tts_voices

    services = wyoming.services
    cloning = dataclasses.replace(services, tts=_CloningView(services.tts))  # type: ignore[arg-type]
    voices = tts_voices(cloning, make_settings(Path("/tmp")))
    names = {v.name: v for v in voices}
    assert set(names) == {"en-Eve_woman", "en-Joe_man"}
    assert names["en-Eve_woman"].languages == ["en"] and "woman" in (names["en-Eve_woman"].description or "")


class _CloningView:
    """The TTS service as a cloning engine would present it (only what the listing reads)."""

    def __init__(self, tts: Any) -> None:
        self.voices = tts.voices
        self.engine_voices = ()
        self.supports_cloning = True
        self.languages = ("en",)
        self.info = tts.info


def test_speech_to_text_at_16_khz_streams_its_transcript(wyoming: Server, speech: Audio) -> None:
    events = asyncio.run(transcribe(wyoming.port, pcm(speech, 16_000), 16_000, 1))
    types = [e.type for e in events]
    assert types[0] == TranscriptStart().event().type and types[-1] == TranscriptStop().event().type
    assert types[-2] == "transcript" and "transcript-chunk" in types
    final = Transcript.from_event(events[-2])
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type))
    assert chunks.strip() == final.text.strip()
    assert word_error_rate(SENTENCE, final.text) <= STT_WER, final.text


@pytest.mark.parametrize("step", [8192, 1 << 30], ids=["in 2 KiB chunks", "in one chunk of 600 KB"])
def test_speech_to_text_at_44_1_khz_stereo_is_resampled(wyoming: Server, speech: Audio, step: int) -> None:
    events = asyncio.run(transcribe(wyoming.port, pcm(speech, 44_100, channels=2), 44_100, 2, step=step))
    final = Transcript.from_event(events[-2])
    assert word_error_rate(SENTENCE, final.text) <= STT_WER, final.text


def test_a_language_the_model_cannot_hear_is_an_error_event_and_the_connection_stays(wyoming: Server) -> None:
    async def run() -> tuple[Error, Pong]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Transcribe(language="de-DE").event())
            error = Error.from_event(await read(client))
            await client.write_event(Ping(text="still there").event())
            return error, Pong.from_event(await read(client))

    error, pong = asyncio.run(run())
    assert error.code == "invalid_input" and "English-only" in error.text
    assert pong.text == "still there"


def test_empty_audio_is_an_empty_transcript(wyoming: Server) -> None:
    events = asyncio.run(transcribe(wyoming.port, b"", 16_000, 1))
    assert Transcript.from_event(events[-2]).text == ""


def test_text_to_speech_whole_is_spoken_back_word_for_word(wyoming: Server) -> None:
    async def run() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Synthesize(text=SENTENCE).event())
            seen, _ = await until(client, AudioStop().event().type)
            return seen

    events = asyncio.run(run())
    assert events[0].type == AudioStart(rate=1, width=2, channels=1).event().type
    assert sum(1 for e in events if e.type == "audio-start") == 1
    audio = received_audio(events)
    assert audio.sample_rate == wyoming.services.tts.backend.sample_rate
    assert word_error_rate(SENTENCE, heard(wyoming.services, audio)) <= SYNTH_WER


def test_text_to_speech_streamed_speaks_before_the_text_ends(wyoming: Server) -> None:
    sentences = [SENTENCE, "The second sentence comes a little later.", "And this one ends it."]

    async def run() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            voice = SynthesizeVoice(name=wyoming.services.tts.backend.info.id)
            await client.write_event(SynthesizeStart(voice=voice).event())
            for word in sentences[0].split():
                await client.write_event(SynthesizeChunk(text=word + " ").event())
            await client.write_event(SynthesizeChunk(text=sentences[1][:10]).event())
            # The first sentence is complete; its audio comes while the text is still open.
            seen, first = await until(client, "audio-chunk", within=60)
            await client.write_event(SynthesizeChunk(text=sentences[1][10:] + " " + sentences[2]).event())
            await client.write_event(Synthesize(text=" ".join(sentences)).event())  # the compatibility copy
            await client.write_event(SynthesizeStop().event())
            rest, _ = await until(client, SynthesizeStopped().event().type)
            return [*seen, first, *rest]

    events = asyncio.run(run())
    starts = sum(1 for e in events if e.type == "audio-start")
    assert starts == sum(1 for e in events if e.type == "audio-stop") >= 2  # sentence by sentence
    text = heard(wyoming.services, received_audio(events))
    assert word_error_rate(" ".join(sentences), text) <= SYNTH_WER, text


def test_an_unknown_voice_is_an_error_event(wyoming: Server) -> None:
    async def run() -> Error:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            outside = SynthesizeVoice(name="../../etc/passwd")
            await client.write_event(Synthesize(text="Hello.", voice=outside).event())
            return Error.from_event(await read(client))

    error = asyncio.run(run())
    assert error.code == "not_found"


def test_handle_keeps_one_conversation_across_two_turns(wyoming: Server) -> None:
    conversation = "01HXK5Q2ZB6M3V6Y0C7W9AZ4PQ"  # a Home Assistant conversation id (a ULID)

    async def turn(text: str) -> tuple[list[Event], Handled]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Transcript(text=text, context={"conversation_id": conversation}).event())
            seen, handled = await until(client, "handled", "not-handled")
            assert Handled.is_type(handled.type), handled
            stop = await read(client)
            assert HandledStop.is_type(stop.type)
            return seen, Handled.from_event(handled)

    async def run() -> list[tuple[list[Event], Handled]]:
        return [await turn("My name is Ada."), await turn("What did I just tell you?")]

    turns = asyncio.run(run())
    for seen, handled in turns:
        assert HandledStart.is_type(seen[0].type)
        chunks = "".join(HandledChunk.from_event(e).text for e in seen if HandledChunk.is_type(e.type))
        assert handled.text and chunks.strip() == handled.text.strip()
        assert handled.context == {"conversation_id": conversation}
    stored = httpx.get(f"{wyoming.http}/conversations/{conversation}", timeout=10).json()
    texts = [t["text"] for t in stored["turns"]]
    assert texts[0] == "My name is Ada." and texts[2] == "What did I just tell you?" and len(texts) == 4


def test_handle_without_text_is_not_handled(wyoming: Server) -> None:
    async def run() -> NotHandled:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Transcript(text="   ").event())
            return NotHandled.from_event(await read(client))

    refused = asyncio.run(run())
    assert refused.text and refused.context and refused.context["conversation_id"]


# -- a full queue, vanished clients, hostile events ---------------------------------------------


@pytest.fixture(scope="module")
def one_slot(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same models behind an STT worker that admits one call and queues none."""
    stt = STTService(services.stt.backend, ModelWorker("stt", 0, 300), services.stt.settings)
    yield from _serve(
        dataclasses.replace(services, stt=stt), tmp_path_factory.mktemp("one-slot"), wyoming_max_connections=4
    )


def test_clients_beyond_a_full_queue_get_an_error_event_not_a_hang(one_slot: Server, speech: Audio) -> None:
    audio = pcm(speech, 16_000) * 3  # long enough that the first is still being heard

    async def run() -> list[str]:
        clients = (overloaded_or_done(one_slot.port, audio) for _ in range(3))
        return await asyncio.wait_for(asyncio.gather(*clients), 120)

    outcomes = asyncio.run(run())
    assert "transcript-stop" in outcomes and "overloaded" in outcomes, outcomes


async def overloaded_or_done(port: int, audio: bytes) -> str:
    """How one ASR request ended: `transcript-stop`, or the code of its error event."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        for i in range(0, len(audio), 32_000):
            chunk = AudioChunk(rate=16_000, width=2, channels=1, audio=audio[i : i + 32_000])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while True:
            event = await read(client)
            if Error.is_type(event.type):
                return str(Error.from_event(event).code)
            if TranscriptStop.is_type(event.type):
                return event.type


def test_connections_beyond_the_limit_are_refused_with_an_error_event(one_slot: Server) -> None:
    async def settle(count: int) -> None:  # the server's own count (a busy CPU is slow to accept)
        began = time.monotonic()
        while one_slot.wyoming.connections != count and time.monotonic() - began < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert one_slot.wyoming.connections == count, f"{one_slot.wyoming.connections} open, not {count}"

    async def run() -> Error:
        await settle(0)  # an earlier test's connections have ended
        clients = [AsyncTcpClient("127.0.0.1", one_slot.port) for _ in range(4)]
        for c in clients:
            await c.connect()
        try:
            await settle(4)
            async with AsyncTcpClient("127.0.0.1", one_slot.port) as extra:
                event = await read(extra, 30)
                assert await asyncio.wait_for(extra.read_event(), 10) is None  # then closed
                return Error.from_event(event)
        finally:
            for c in clients:
                await c.disconnect()

    assert asyncio.run(run()).code == "overloaded"


def test_a_client_that_vanishes_mid_synthesis_frees_the_tts_slot(wyoming: Server) -> None:
    worker = wyoming.services.tts.worker
    text = " ".join([SENTENCE] * 12)  # several segments: a minute of speech

    async def run() -> float:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Synthesize(text=text).event())
            await until(client, "audio-chunk")
        gone = time.monotonic()
        while worker.pending and time.monotonic() - gone < 20:  # noqa: ASYNC110 - polling another thread's count
            await asyncio.sleep(0.05)
        return time.monotonic() - gone

    freed_after = asyncio.run(run())
    assert worker.pending == 0, "the slot is still held"
    assert freed_after < 10


def test_a_unix_socket_serves_the_same_protocol(services: Services, tmp_path: Path) -> None:

    path = tmp_path / "wyoming.sock"

    async def run() -> Info:
        server = WyomingServer(make_settings(tmp_path, wyoming_uri=f"unix://{path}"), ServiceGate(services))
        await server.start()
        try:
            async with AsyncUnixClient(str(path)) as client:
                await client.write_event(Describe().event())
                return Info.from_event(await read(client, 10))
        finally:
            await server.stop()

    assert asyncio.run(run()).asr and not path.exists()


def test_while_the_models_load_requests_get_not_ready(tmp_path: Path) -> None:

    async def run() -> Error:
        server = WyomingServer(make_settings(tmp_path, wyoming_uri="tcp://127.0.0.1:0"), ServiceGate())
        await server.start()
        try:
            async with AsyncTcpClient("127.0.0.1", server.port) as client:  # type: ignore[arg-type]
                await client.write_event(Describe().event())
                return Error.from_event(await read(client, 10))
        finally:
            await server.stop()

    assert asyncio.run(run()).code == "not_ready"


def _raw(header: dict[str, Any], *extra: bytes) -> bytes:
    return json.dumps(header).encode() + b"\n" + b"".join(extra)


FORMAT = {"rate": 16000, "width": 2, "channels": 1}
HOSTILE = {
    "unknown type": _raw({"type": "make-coffee"}),
    "bad JSON header": b'{"type": "describe", \n',
    "header not an object": b"[1, 2, 3]\n",
    "type not a string": _raw({"type": 7}),
    "data not an object": _raw({"type": "transcribe", "data_length": 2}, b"[]"),
    "payload length lies": _raw({"type": "audio-chunk", "data": FORMAT, "payload_length": 64000}, bytes(100)),
    "100 MB declared payload": _raw({"type": "audio-chunk", "data": FORMAT, "payload_length": 100 << 20}),
    "payload longer than declared": _raw({"type": "audio-start", "data": FORMAT})
    + _raw({"type": "audio-chunk", "data": FORMAT, "payload_length": 2}, b"x" * 50),
    "negative length": _raw({"type": "audio-chunk", "payload_length": -5}),
    "audio before start": _raw({"type": "audio-chunk", "data": FORMAT, "payload_length": 4}, b"\0\0\0\0"),
    "audio-stop before start": _raw({"type": "audio-stop"}),
    "chunk without its format": _raw({"type": "audio-start", "data": FORMAT})
    + _raw({"type": "audio-chunk", "payload_length": 2}, b"\0\0"),
    "synthesize text not a string": _raw({"type": "synthesize", "data": {"text": ["a"]}}),
    "voice name not a string": _raw({"type": "synthesize", "data": {"text": "hi", "voice": {"name": 5}}}),
    "synthesize-chunk before start": _raw({"type": "synthesize-chunk", "data": {"text": "hi"}}),
    "a header line of a megabyte": b"x" * (1024 * 1024) + b"\n",
}  # fmt: skip


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_event_closes_its_connection_and_no_other(wyoming: Server, raw: bytes) -> None:
    async def keep_busy(client: AsyncTcpClient) -> None:  # a bystander that is never idle
        while True:  # (a ping is no request: a connection that only pings is idle)
            await client.write_event(Describe().event())
            assert Info.is_type((await read(client, 10)).type)
            await asyncio.sleep(0.5)

    async def run() -> tuple[list[Event], float, Info]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as bystander:
            pinging = asyncio.create_task(keep_busy(bystander))
            async with AsyncTcpClient("127.0.0.1", wyoming.port) as hostile:
                assert hostile._writer is not None
                hostile._writer.write(raw)
                await hostile._writer.drain()
                began = time.monotonic()
                seen = []
                while (event := await asyncio.wait_for(hostile.read_event(), 15)) is not None:
                    seen.append(event)
                took = time.monotonic() - began
            assert not pinging.done()
            pinging.cancel()
            await asyncio.gather(pinging, return_exceptions=True)
            await bystander.write_event(Describe().event())
            return seen, took, Info.from_event(await read(bystander, 30))

    # Bounded as a whole: a connection that is never closed fails here, with where it waited.
    seen, took, info = asyncio.run(asyncio.wait_for(run(), 90))
    assert [e.type for e in seen] == ["error"], seen  # told why, then closed
    error = Error.from_event(seen[0])
    assert error.text and error.code in ("protocol_error", "payload_too_large", "idle_timeout"), error
    assert took < 10
    assert info.asr  # the other connection is served as before


def test_after_every_malformed_event_the_server_still_transcribes(wyoming: Server, speech: Audio) -> None:
    events = asyncio.run(transcribe(wyoming.port, pcm(speech, 16_000), 16_000, 1))
    assert word_error_rate(SENTENCE, Transcript.from_event(events[-2]).text) <= STT_WER


def test_events_of_other_wyoming_programs_are_dropped_as_the_protocol_asks(wyoming: Server) -> None:
    async def run() -> Pong:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            await client.write_event(Event(type="detect", data={"names": ["ok_nabu"]}))
            await client.write_event(Ping(text="after").event())
            return Pong.from_event(await read(client, 10))

    assert asyncio.run(run()).text == "after"


def test_an_idle_connection_is_closed(wyoming: Server) -> None:
    async def run() -> tuple[list[Event], float]:
        async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
            began = time.monotonic()
            seen = []
            while (event := await asyncio.wait_for(client.read_event(), 15)) is not None:
                seen.append(event)
            return seen, time.monotonic() - began

    seen, took = asyncio.run(run())
    assert [Error.from_event(e).code for e in seen] == ["idle_timeout"] and 2.5 < took < 10


def test_wyoming_requests_are_counted_in_the_metrics(wyoming: Server) -> None:
    text = httpx.get(f"{wyoming.http}/metrics", timeout=10).text
    assert 'voice_dialogue_wyoming_events_total{outcome="ok",type="describe"}' in text
    assert 'outcome="protocol_error",type="protocol"' in text
    assert "voice_dialogue_wyoming_connections" in text


def test_zeroconf_announces_the_server_for_home_assistant_to_find(tmp_path: Path) -> None:
    from zeroconf.asyncio import AsyncZeroconf

    settings = make_settings(
        tmp_path, wyoming_uri="tcp://0.0.0.0:0", wyoming_zeroconf=True, wyoming_zeroconf_name="vd-test"
    )

    async def run() -> tuple[int | None, int | None, bool]:
        server = WyomingServer(settings, ServiceGate())
        await server.start()
        browser = AsyncZeroconf()
        try:
            if server._zeroconf is None:  # no multicast on this machine: the server still serves
                return None, server.port, False
            found = await browser.async_get_service_info(
                "_wyoming._tcp.local.", "vd-test._wyoming._tcp.local.", timeout=5000
            )
            return (found.port if found else -1), server.port, True
        finally:
            await browser.async_close()
            await server.stop()

    found, port, announced = asyncio.run(run())
    if not announced:
        pytest.skip("this machine cannot send multicast; the announcement was logged as not made")
    assert found == port


@pytest.mark.parametrize("uri", ["tcp://0.0.0.0", "http://0.0.0.0:10300", "tcp://:10300", "unix://", "10300"])
def test_a_wyoming_uri_that_cannot_be_listened_on_is_a_settings_error(tmp_path: Path, uri: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="wyoming_uri"):
        make_settings(tmp_path, wyoming_uri=uri)
