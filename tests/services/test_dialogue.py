"""Dialogue scripts on the embedded voices (turn by turn), over HTTP: the round trip through Whisper,
two speakers in the two embedded voices, honest headers when a third must share one, casts, hostile
scripts; and a multi-speaker Piper model whose speakers become library voices."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app.audio.decode import decode_audio
from backend.app.backends import embedded
from backend.app.backends.piper import PiperBackend
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.values import TranscribeOptions
from backend.app.core.worker import ModelWorker
from backend.app.main import create_app
from backend.app.services.tts import TTSService
from backend.app.text.wer import word_error_rate
from backend.app.voices.cache import SpeakerCache
from tests.conftest import SYNTH_WER
from tests.sse import parse_sse

TURNS = [
    ("Speaker 1", "Good morning and welcome to the weekly science show."),
    ("Speaker 2", "Thank you, it is a pleasure to be here today."),
    ("Speaker 1", "Let us begin with the story about the new telescope."),
]


def test_a_three_turn_script_round_trips_through_whisper(client: TestClient, services: Services) -> None:
    text = "\n".join(f"{label}: {line}" for label, line in TURNS)
    response = client.post("/tts", json={"text": text, "format": "wav"})
    assert response.status_code == 200, response.text
    assert response.headers["x-turns"] == "3" and response.headers["x-segments"] == "3"
    # Two embedded voices: each speaker has one of their own.
    assert response.headers["x-shared-voice"] == "false"
    assert response.headers["x-speakers"] == "Speaker%201=piper%3Aheart,Speaker%202=piper%3Ajoe"
    audio = decode_audio(response.content, 16_000)
    heard = services.stt.backend.transcribe(audio, TranscribeOptions(language="en")).text
    reference = " ".join(line for _, line in TURNS)
    assert word_error_rate(reference, heard) <= SYNTH_WER, heard
    assert "speaker" not in heard.lower()  # the labels are not read out


def test_plain_text_is_spoken_as_before(client: TestClient) -> None:
    response = client.post("/tts", json={"text": "Note: the meeting starts at 10:30."})
    assert response.status_code == 200
    assert response.headers["x-voice"] == "builtin" and "x-turns" not in response.headers


def test_speaker_info_lists_the_two_voices_of_the_default_cast(client: TestClient) -> None:
    dialogue = client.get("/speaker_info").json()["dialogue"]
    assert dialogue == {
        "native": False,
        "max_speakers_per_window": None,
        "window_chars": None,
        "distinct_voices": True,
        "default_cast": ["piper:heart", "piper:joe"],
    }


def test_a_third_speaker_takes_the_first_voice_again_as_the_headers_say(client: TestClient) -> None:
    text = "Ann: Hello there.\nBob: Hi Ann.\nCarl: Good evening, both of you."
    response = client.post("/tts", json={"text": text, "format": "wav"})
    assert response.status_code == 200, response.text
    assert response.headers["x-shared-voice"] == "false"  # not every speaker in one voice
    assert response.headers["x-speakers"] == "Ann=piper%3Aheart,Bob=piper%3Ajoe,Carl=piper%3Aheart"


def test_streamed_script_events_carry_turn_indices(client: TestClient) -> None:
    script = [{"speaker": label, "text": line} for label, line in TURNS]
    response = client.post("/tts", json={"script": script, "stream": True, "stream_format": "sse"})
    assert response.status_code == 200
    events = parse_sse(response.text.splitlines())
    audio = [data for name, data in events if name == "audio"]
    assert [e["turns"] for e in audio] == [[0], [1], [2]]
    assert [e["speakers"] for e in audio] == [["Speaker 1"], ["Speaker 2"], ["Speaker 1"]]
    assert all(decode_audio(base64.b64decode(e["audio"])).duration > 1 for e in audio)
    name, done = events[-1]
    assert name == "done" and done["turns"] == 3 and done["shared_voice"] is False


def test_casts_are_stored_listed_used_and_removed(client: TestClient) -> None:
    created = client.put("/casts/show", json={"speakers": {"Host": "Joe", "Guest": "en-Eve_woman.wav"}})
    assert created.status_code == 201, created.text
    assert client.put("/casts/show", json={"speakers": {"Host": "Eve"}}).status_code == 200  # replaced
    assert client.get("/casts/show").json()["speakers"] == {"Host": "Eve"}
    assert [c["name"] for c in client.get("/casts").json()["casts"]] == ["show"]
    assert [c["name"] for c in client.get("/speaker_info").json()["casts"]] == ["show"]
    # The cast's label makes a single labelled line a script.
    spoken = client.post("/tts", json={"text": "Host: Welcome to the show.", "cast": "show"})
    assert spoken.status_code == 200 and spoken.headers["x-turns"] == "1"
    assert client.delete("/casts/show").status_code == 200
    assert client.delete("/casts/show").status_code == 404
    assert client.post("/tts", json={"text": "Host: Hi.", "cast": "show"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"speakers": {"1": "../../etc/passwd"}}, 400),
        ({"speakers": {"1": "/etc/hosts.wav"}}, 400),
        ({"speakers": {"1": "nobody"}}, 404),
        ({"speakers": {}}, 422),
        ({"speakers": {"1": ""}}, 422),
        ({"speakers": ["Joe"]}, 422),
        ({"speakers": {"1": 7}}, 422),
        ({"speakers": "Joe"}, 422),
        ({"speakers": {"x" * 200: "Joe"}}, 422),
    ],
)
def test_bad_casts_are_refused(client: TestClient, body: dict[str, object], status: int) -> None:
    response = client.put("/casts/bad", json=body)
    assert response.status_code == status, response.text
    assert "message" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": "Speaker 1:\nSpeaker 2:"}, 422),  # only labels
        ({"script": [{"speaker": "1", "text": "   "}]}, 422),  # no text
        ({"script": []}, 422),
        ({"script": [{"speaker": "A", "text": "x"}] * 10_000}, 413),
        ({"text": "A: x\n" * 10_000}, 413),
        ({"text": ("L" * 500 + ": hello\n") * 2}, 422),  # 500-character labels
        ({"script": [{"speaker": "L" * 500, "text": "hello"}]}, 422),
        ({"text": "Speaker 1: hi", "speakers": {"1": "../../../etc/passwd"}}, 400),
        ({"text": "Speaker 1: hi", "speakers": {"1": "voices/../../secret.wav"}}, 400),
        ({"text": "Speaker 1: hi", "speakers": ["Joe"]}, 422),
        ({"text": "Speaker 1: hi", "speakers": {"1": {"voice": "Joe"}}}, 422),
        ({"text": "Speaker 1: hi", "speakers": "Joe"}, 422),
        ({"text": "hi", "script": [{"speaker": "1", "text": "hi"}]}, 422),
        ({"script": [{"speaker": None, "text": "hi"}]}, 422),
        ({"script": "Speaker 1: hi"}, 422),
        ({"text": "Speaker 1: hi", "cast": "../x"}, 422),
        ({"text": "Speaker 1: hi", "dialogue": "yes please"}, 422),
        ({"text": "plain", "dialogue": True}, 422),
    ],
)
def test_hostile_scripts_get_a_clear_4xx(client: TestClient, body: dict[str, object], status: int) -> None:
    response = client.post("/tts", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


# A Piper model with two speakers: the embedded voice's graph with a `sid` input that sets its
# speaking rate (speaker "slow" at 1.6 times the length), so which speaker spoke each turn is
# measurable (Piper normalises loudness, so a gain would not show).
SPEAKERS = {"brisk": 0, "slow": 1}
SCALES = [[1.0, 1.0, 1.0], [1.0, 1.6, 1.0]]  # noise, length, noise_w


def two_speaker_piper(target: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    source = embedded.piper_voice_file()
    model = onnx.load(str(source))
    graph = model.graph
    renames = {"sid": "sid_constant", "scales": "scales_of_speaker"}
    # The single-speaker export has a constant named `sid`; Piper feeds its speaker id by that name.
    for tensor in graph.initializer:
        if tensor.name == "sid":
            tensor.name = "sid_constant"
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    graph.initializer.extend(
        [
            helper.make_tensor(
                "speaker_scales", TensorProto.FLOAT, [2, 3], [x for row in SCALES for x in row]
            ),
            helper.make_tensor("scales_shape", TensorProto.INT64, [1], [3]),
        ]
    )
    nodes = [
        helper.make_node("Gather", ["speaker_scales", "sid"], ["speaker_scale"]),
        helper.make_node("Reshape", ["speaker_scale", "scales_shape"], ["speaker_scale_flat"]),
        helper.make_node("Mul", ["scales", "speaker_scale_flat"], ["scales_of_speaker"]),
        *graph.node,
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    config = json.loads(source.with_suffix(".onnx.json").read_text())
    config.update(num_speakers=len(SPEAKERS), speaker_id_map=SPEAKERS)
    target.with_suffix(".onnx.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def multi_client(
    settings: Settings, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TTSService]]:
    folder = tmp_path_factory.mktemp("piper2")
    backend = PiperBackend(str(two_speaker_piper(folder / "two-speaker.onnx")))
    tts = TTSService(
        backend, ModelWorker("tts", 2), services.tts.voices, SpeakerCache(4), services.tts.settings
    )
    multi = dataclasses.replace(services, tts=tts)
    with TestClient(create_app(settings, multi), raise_server_exceptions=False) as client:
        yield client, tts
    tts.worker.shutdown()


def test_a_multi_speaker_piper_model_lists_its_speakers_as_voices(
    multi_client: tuple[TestClient, TTSService],
) -> None:
    client, _ = multi_client
    files = [v["file"] for v in client.get("/voices").json()["voices"]]
    assert {"piper:brisk", "piper:slow"} <= set(files)
    dialogue = client.get("/speaker_info").json()["dialogue"]
    assert dialogue["default_cast"] == ["piper:brisk", "piper:slow"] and dialogue["distinct_voices"]
    one = client.post("/tts", json={"text": "Hello there.", "voice": "piper:slow"})
    assert one.status_code == 200 and one.headers["x-voice"] == "piper%3Aslow"
    assert client.post("/tts", json={"text": "Hi.", "voice": "piper:nobody"}).status_code == 404


def test_each_turn_is_spoken_by_its_speaker(multi_client: tuple[TestClient, TTSService]) -> None:
    client, _ = multi_client
    line = "The same words, spoken by each speaker in turn."
    script = [{"speaker": label, "text": line} for label in ("Speaker 1", "Speaker 2", "Speaker 1")]
    body = {"script": script, "speakers": {"Speaker 2": "piper:slow"}, "stream": True, "stream_format": "sse"}
    response = client.post("/tts", json=body)
    assert response.status_code == 200, response.text
    events = parse_sse(response.text.splitlines())
    seconds = [decode_audio(base64.b64decode(d["audio"])).duration for n, d in events if n == "audio"]
    # Speaker 1 got the default cast's first unused voice (brisk); Speaker 2 the slow one it was mapped to.
    assert seconds[1] > 1.3 * seconds[0] and seconds[1] > 1.3 * seconds[2], seconds
    done = events[-1][1]
    assert done["speakers"] == {"Speaker 1": "piper:brisk", "Speaker 2": "piper:slow"}
    assert done["shared_voice"] is False
