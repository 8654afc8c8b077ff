"""Word timings in the APIs: /tts and /v1/audio/speech as JSON with the words, captions, the
streamed events' words, /conversation's audio events, and a truncation on /v1/realtime that stores
the reply up to the last word heard."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app.api.routes.captioned import kokoro_voice
from backend.app.audio.decode import decode_audio
from backend.app.container import Services
from backend.app.text.normalize import clean_for_speech
from backend.app.text.word_timing import joined, words_of
from tests.api.test_openai_realtime import Events, Server, _serve, sdk
from tests.conftest import clip
from tests.sse import parse_sse

LONG = (
    "The first sentence is short. The second one is a little longer than the first one was, and it "
    "goes on for a while before it ends. The third is short again."
)


def check_words(words: list[dict[str, Any]], text: str, duration: float) -> None:
    """Every word of `text`, in order, each within the audio and after the one before."""
    assert [w["word"] for w in words] == words_of(clean_for_speech(text))
    for before, after in itertools.pairwise(words):
        assert before["start"] <= before["end"] <= after["start"] + 0.001
    assert words[0]["start"] >= 0 and words[-1]["end"] <= duration + 0.001


def test_tts_answers_json_with_the_words_and_captions(client: TestClient) -> None:
    response = client.post(
        "/tts", json={"text": LONG, "timestamps": True, "captions": "vtt", "format": "flac"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    audio = decode_audio(base64.b64decode(body["audio"]))
    assert body["format"] == "flac" and abs(audio.duration - body["duration"]) < 0.05
    check_words(body["words"], LONG, body["duration"])
    assert int(response.headers["X-Segments"]) >= 2  # segments joined by a gap: the times carry across
    assert body["words"][-1]["end"] > 0.8 * body["duration"]
    vtt = body["captions"]
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)", vtt)
    assert " ".join(text for _, _, text in cues) == joined([w["word"] for w in body["words"]])
    srt = client.post("/tts", json={"text": "Hello there.", "captions": "srt"}).json()
    assert srt["captions"].startswith("1\n00:00:00,") and "Hello there." in srt["captions"]
    assert srt["words"] and srt["format"] == "wav"


def test_tts_timestamps_with_a_streamed_audio_body_is_refused(client: TestClient) -> None:
    response = client.post("/tts", json={"text": "Hi.", "timestamps": True, "stream": True})
    assert response.status_code == 422 and "stream_format=sse" in response.text


def test_tts_events_carry_each_pieces_words_on_the_speech_clock(client: TestClient) -> None:
    with client.stream(
        "POST", "/tts", json={"text": LONG, "stream": True, "stream_format": "sse"}
    ) as response:
        events = [data for name, data in parse_sse(response.iter_lines()) if name == "audio"]
    assert len(events) >= 2
    clock = 0.0
    for event in events:
        assert event["start"] == pytest.approx(clock, abs=0.002)
        assert all(
            clock <= w["start"] and w["end"] <= clock + event["duration"] + 0.001 for w in event["words"]
        )
        clock += event["duration"]
    check_words([w for e in events for w in e["words"]], LONG, clock)


def test_openai_speech_with_timestamps_and_its_events(client: TestClient) -> None:
    body = {"model": "tts-1", "input": LONG, "voice": "alloy", "response_format": "mp3"}
    timed = client.post("/v1/audio/speech", json={**body, "timestamps": True})
    assert timed.status_code == 200, timed.text
    data = timed.json()
    assert decode_audio(base64.b64decode(data["audio"])).duration > 3
    check_words(data["words"], LONG, data["duration"])
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert events[-1]["type"] == "speech.audio.done" and deltas
    words = [w for e in deltas for w in e["words"]]
    assert [w["word"] for w in words] == [w["word"] for w in data["words"]]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


def test_kokoro_captioned_speech_whole_and_streamed(client: TestClient) -> None:
    """Kokoro-FastAPI's captioned speech, as its clients call it (stream is its default)."""
    body = {"model": "kokoro", "input": LONG, "voice": "af_heart", "response_format": "wav", "stream": False}
    whole = client.post("/dev/captioned_speech", json=body)
    assert whole.status_code == 200, whole.text
    data = whole.json()
    audio = decode_audio(base64.b64decode(data["audio"]))
    stamps = data["timestamps"]
    assert data["audio_format"] == "audio/wav" and stamps[-1]["end_time"] <= audio.duration + 0.001
    assert [s["word"] for s in stamps] == words_of(clean_for_speech(LONG))
    with client.stream(
        "POST", "/dev/captioned_speech", json={**body, "stream": True, "response_format": "mp3"}
    ) as r:
        assert r.headers["content-type"].startswith("application/json")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) >= 2 and all(line["audio_format"] == "audio/mpeg" for line in lines)
    streamed = decode_audio(b"".join(base64.b64decode(line["audio"]) for line in lines))
    assert abs(streamed.duration - audio.duration) < 0.3  # the pieces are one mp3 stream
    words = [s for line in lines for s in line["timestamps"]]
    assert [s["word"] for s in words] == [s["word"] for s in stamps]
    assert [s["start_time"] for s in words] == sorted(s["start_time"] for s in words)
    quiet = client.post("/dev/captioned_speech", json={**body, "return_timestamps": False}).json()
    assert quiet["timestamps"] == [] and quiet["audio"]
    assert client.post("/dev/captioned_speech", json={**body, "voice": "am_adam"}).status_code == 200
    bad = client.post("/dev/captioned_speech", json={**body, "speed": 9})
    assert bad.status_code == 422 and "error" in bad.json()


def test_conversation_audio_events_carry_the_replys_words(client: TestClient) -> None:
    files = {"audio_file": ("speech.wav", clip("speech.wav"), "audio/wav")}
    with client.stream("POST", "/conversation", files=files, data={"stream": "true"}) as response:
        events = parse_sse(response.iter_lines())
    audio = [data for name, data in events if name == "audio"]
    done = next(data for name, data in events if name == "done")
    assert audio
    words = [w for event in audio for w in event["words"]]
    assert joined([w["word"] for w in words]).split() == clean_for_speech(done["reply"]).split()
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and audio[0]["start"] == 0


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("rt-words"), chat_tokens=60)


def test_truncating_a_reply_spoken_whole_stores_the_words_heard(server: Server) -> None:
    """The server sends a reply's audio faster than real time, so it is complete before it is
    heard; a truncation then rewrites it as the words that ended within `audio_end_ms`."""

    async def run() -> tuple[Events, str, dict[str, Any]]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            text = "Describe a sunny morning at the beach in three sentences."
            content = [{"type": "input_text", "text": text}]
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": content}
            )
            await connection.response.create()
            done = (await events.of("response.done", within=120))["response"]
            await connection.send(
                {"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 0}
            )
            assert (await events.of("error"))["error"]["code"] == "item_truncate_invalid_item_id"
            item = done["output"][0]["id"]
            await connection.send(
                {"type": "conversation.item.truncate", "item_id": item, "audio_end_ms": 10**7}
            )
            assert (await events.of("error"))["error"]["param"] == "audio_end_ms"
            await connection.send(
                {"type": "conversation.item.truncate", "item_id": item, "audio_end_ms": 2000}
            )
            truncated = await events.of("conversation.item.truncated")
            assert truncated["item_id"] == item and truncated["audio_end_ms"] == 2000
            return events, conversation, done

    events, conversation, done = asyncio.run(run())
    assert done["status"] == "completed"
    words = [w for e in events.all if e["type"] == "response.output_audio.delta" for w in e.get("words", [])]
    assert words and words[-1]["end"] > 2.5, "the reply should be longer than what was heard"
    heard = [w["word"] for w in words if w["end"] <= 2.0]
    assert 2 <= len(heard) < len(words)
    turns = server.services.history.store.turns(conversation)
    assert turns[-1].role == "assistant" and turns[-1].interrupted
    assert turns[-1].text == joined(heard)
    # What the model is shown next is exactly that.
    prompt = server.services.chat.build_messages(conversation, "And then?")
    assert [m.content for m in prompt if m.role == "assistant"][-1] == joined(heard)
    transcript = done["output"][0]["content"][0]["transcript"]
    assert clean_for_speech(transcript).startswith(turns[-1].text.rstrip(",.;:!?"))


def test_a_truncation_of_a_reply_no_longer_the_last_is_refused(server: Server) -> None:
    async def run() -> dict[str, Any]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await events.of("conversation.created")
            items = []
            for text in ("Say hello.", "Say goodbye."):
                content = [{"type": "input_text", "text": text}]
                await connection.conversation.item.create(
                    item={"type": "message", "role": "user", "content": content}
                )
                await connection.response.create()
                items.append((await events.of("response.done", within=120))["response"]["output"][0]["id"])
            await connection.send(
                {"type": "conversation.item.truncate", "item_id": items[0], "audio_end_ms": 100}
            )
            return await events.of("error")

    error = asyncio.run(run())
    assert error["error"]["code"] == "item_truncate_invalid_item_id"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("af_heart", "heart"), ("af_bella", "heart"), ("am_adam", "joe"), ("bm_george", "joe"), ("Eve", "Eve")],
)
def test_kokoro_voice_ids_map_to_the_engines_voices(name: str, expected: str) -> None:
    assert kokoro_voice(name, {"heart": "woman", "joe": "man"}) == expected
    if name != "Eve":  # an engine with no voices of its own (VibeVoice): the default voice
        assert kokoro_voice(name, {}) == "alloy"


def test_a_truncation_while_in_progress_holds_when_the_reply_then_ends_whole(server: Server) -> None:
    async def run() -> tuple[Events, str]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            content = [
                {
                    "type": "input_text",
                    "text": "Describe a rainy afternoon in a small town in four sentences.",
                }
            ]
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": content}
            )
            await connection.response.create()
            first = await events.of("response.output_audio.delta", within=120)
            await connection.send(
                {"type": "conversation.item.truncate", "item_id": first["item_id"], "audio_end_ms": 900}
            )
            await events.of("conversation.item.truncated")
            done = await events.of("response.done", within=120)
            assert done["response"]["status"] == "completed"
            return events, conversation

    events, conversation = asyncio.run(run())
    types = events.types()
    assert types.index("conversation.item.truncated") < types.index("response.done")  # while in progress
    words = [w for e in events.all if e["type"] == "response.output_audio.delta" for w in e.get("words", [])]
    heard = [w["word"] for w in words if w["end"] <= 0.9]
    assert len(heard) < len(words)
    turns = server.services.history.store.turns(conversation)
    assert turns[-1].role == "assistant" and turns[-1].interrupted
    assert turns[-1].text == joined(heard)
