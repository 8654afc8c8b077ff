"""The streamed forms of /chat, /tts and /conversation (Server-Sent Events and chunked audio), on
the real embedded models."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from backend.app.audio.decode import decode_audio
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, SYNTH_WER, clip
from tests.sse import TURN_TIMINGS, parse_sse


def sse(client: TestClient, path: str, **kwargs: object) -> list[tuple[str, dict[str, object]]]:
    with client.stream("POST", path, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.iter_lines())


def test_chat_stream_sends_deltas_then_done_and_stores_the_turn(client: TestClient) -> None:
    events = sse(client, "/chat", json={"text": "Which city is the capital of France?", "stream": True})
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"reply_delta"} and len(names) > 2
    done = events[-1][1]
    deltas = "".join(str(data["text"]) for name, data in events if name == "reply_delta")
    assert deltas.strip() == done["reply"] and "paris" in deltas.lower()
    timings = done["timings"]
    assert isinstance(timings, dict) and 0 < timings["llm_first_token_ms"] <= timings["llm_ms"]
    stored = client.get(f"/conversations/{done['conversation_id']}").json()
    assert [t["role"] for t in stored["turns"]] == ["user", "assistant"]
    assert stored["turns"][1]["text"] == done["reply"] and stored["turns"][1]["interrupted"] is False


def test_chat_stream_form_field_and_the_same_reply_as_unstreamed(client: TestClient) -> None:
    text = "Name a colour of the sky."
    plain = client.post("/chat", data={"text": text}).json()
    events = sse(client, "/chat", data={"text": text, "stream": "true"})
    assert events[-1][1]["reply"] == plain["reply"]  # greedy: the same words either way


@pytest.mark.parametrize(
    ("body", "status"),
    [({"text": "  ", "stream": True}, 422), ({"text": "hi", "conversation_id": "../x", "stream": True}, 422)],
)
def test_chat_stream_bad_input_is_refused_before_streaming(
    client: TestClient, body: dict[str, object], status: int
) -> None:
    response = client.post("/chat", json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json" and "error" in response.json()


@pytest.mark.parametrize("fmt", ["wav", "pcm", "ogg", "mp3"])
def test_tts_stream_is_the_same_speech_as_unstreamed(client: TestClient, fmt: str) -> None:
    text = "The first sentence is short. " + "The second one is a little longer than the first one was. " * 3
    plain = client.post("/tts", json={"text": text, "format": "wav"})
    with client.stream("POST", "/tts", json={"text": text, "format": fmt, "stream": True}) as response:
        assert response.status_code == 200
        chunks = list(response.iter_bytes())
        headers = response.headers
    assert int(headers["x-segments"]) > 1 and headers["x-voice"] == "builtin"
    data = b"".join(chunks)
    rate = int(headers["x-sample-rate"])
    if fmt == "pcm":
        assert len(data) % 2 == 0
        streamed_s = len(data) / 2 / rate
    else:
        streamed_s = decode_audio(data, 16000).duration
    # Piper samples its durations (VITS noise), so two renderings differ by a few percent.
    assert streamed_s == pytest.approx(decode_audio(plain.content, 16000).duration, rel=0.08)


def test_tts_stream_round_trips_through_stt(client: TestClient) -> None:
    with client.stream("POST", "/tts", json={"text": SENTENCE, "stream": True}) as response:
        data = response.read()
    heard = client.post("/stt", files={"file": ("s.wav", data, "audio/wav")}).json()
    assert word_error_rate(SENTENCE, heard["text"]) <= SYNTH_WER, heard["text"]


def test_tts_stream_bad_input_is_a_json_error(client: TestClient) -> None:
    assert client.post("/tts", json={"text": "", "stream": True}).status_code == 422
    missing = client.post("/tts", json={"text": "hi", "voice": "Nobody", "stream": True})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_conversation_stream_events_in_order(client: TestClient) -> None:
    events = sse(
        client,
        "/conversation",
        files={"audio_file": ("speech.ogg", clip("speech.ogg"), "audio/ogg")},
        data={"stream": "true"},
    )
    names = [name for name, _ in events]
    assert names[0] == "transcript" and names[-1] == "done"
    assert set(names[1:-1]) == {"reply_delta", "audio"}
    transcript = events[0][1]
    assert word_error_rate(SENTENCE, str(transcript["text"])) <= 0.2 and transcript["language"] == "en"
    done = events[-1][1]
    deltas = "".join(str(data["text"]) for name, data in events if name == "reply_delta")
    assert deltas.strip() == done["reply"]
    pieces = [data for name, data in events if name == "audio"]
    assert [p["index"] for p in pieces] == list(range(len(pieces)))
    audio = [decode_audio(base64.b64decode(str(p["audio"]))) for p in pieces]
    assert all(a.duration > 0.2 for a in audio) and pieces[0]["sample_rate"] == 24000
    timings = done["timings"]
    assert isinstance(timings, dict) and set(timings) == TURN_TIMINGS
    assert 0 < timings["first_audio_ms"] <= timings["total_ms"]
    # The stored reply audio is the pieces joined.
    whole = decode_audio(client.get(str(done["audio_url"])).content)
    assert whole.duration == pytest.approx(sum(a.duration for a in audio), abs=0.05)
    assert np.isfinite(whole.samples).all()


def test_conversation_stream_of_silence_has_no_reply(client: TestClient) -> None:
    events = sse(
        client,
        "/conversation",
        files={"audio_file": ("s.wav", clip("silence.wav"), "audio/wav")},
        data={"stream": "true"},
    )
    assert [name for name, _ in events] == ["transcript", "done"]
    assert events[1][1]["reply"] == "" and events[1][1]["audio_url"] is None


def test_conversation_stream_bad_audio_is_a_json_error(client: TestClient) -> None:
    response = client.post(
        "/conversation",
        files={"audio_file": ("x.wav", b"not audio at all", "audio/wav")},
        data={"stream": "true"},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_audio"


def test_stt_stream_sends_segment_deltas_then_the_whole_answer(client: TestClient) -> None:
    text = (
        "The library opens at nine. Children's books are on the second floor. "
        "The reading room closes an hour before the building does, at six in the evening."
    )
    speech = client.post("/tts", json={"text": text})
    assert speech.status_code == 200
    events = sse(
        client, "/stt", files={"file": ("s.wav", speech.content, "audio/wav")}, data={"stream": "true"}
    )
    deltas = [data for name, data in events if name == "transcript_delta"]
    name, done = events[-1]
    assert name == "done" and len(deltas) >= 2  # one event per decoded segment, as they come
    assert "".join(str(d["text"]) for d in deltas).strip() == done["text"]
    assert [d["start"] for d in deltas] == sorted(d["start"] for d in deltas)
    assert word_error_rate(text, str(done["text"])) <= SYNTH_WER, done["text"]
    assert len(done["segments"]) == len(deltas) and "stt_ms" in done["timings"]  # type: ignore[arg-type]


def test_stt_stream_refuses_bad_input_before_it_starts(client: TestClient) -> None:
    bad = client.post("/stt", files={"file": ("x.wav", b"not audio", "audio/wav")}, data={"stream": "true"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/json")
    both = {"stream": "true", "optimize_mode": "optimize"}
    refused = client.post("/stt", files={"file": ("s.wav", clip("speech.wav"), "audio/wav")}, data=both)
    assert refused.status_code == 422 and "stream" in refused.json()["error"]["message"]
