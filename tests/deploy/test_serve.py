"""Ray Serve: the application of `backend/serve/config.yaml`, started as a user starts it
(`serve run <config>`, which brings up a local Ray instance), on this CPU with the embedded models.
Two TTS replicas, one each of STT and chat, and the ingress: a /conversation round trip through the
deployments, a streamed turn whose deltas arrive as they are generated, the realtime WebSocket, and
a JSON error for bad input. Only the scale and the settings of the shipped config are changed."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.text.wer import word_error_rate
from bench.serve import launch_serve, local_config, stop_serve
from tests.conftest import DATA, REPO, SENTENCE
from tests.ports import free_port
from tests.server import server_dir, server_settings, wait_ready
from tests.sse import TURN_TIMINGS, parse_sse

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (requirements-serve.txt)")

STARTUP_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shipped config at this machine's scale (no GPU, 2 cores: two TTS replicas, one of each
    other) and the test's directories, run by `serve run` as a user runs it."""
    root = server_dir(tmp_path_factory, "serve")
    port = free_port()
    config = local_config(root, port, {"tts": 2}, **server_settings(root, QUEUE_SIZE="2", LOG_FORMAT="text"))
    log_path = root / "serve.log"
    process = launch_serve(config, log_path)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log_path, STARTUP_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_serve(process)


def test_health_names_each_stage_on_its_replicas(serve_url: str) -> None:
    body = httpx.get(f"{serve_url}/health", timeout=10).json()
    assert body["status"] == "ok"
    modules = body["modules"]
    assert modules["stt"]["device"].endswith("Ray Serve x1")
    assert modules["tts"]["device"].endswith("Ray Serve x2")
    assert modules["tts"]["capacity"] == 2 + 2  # two replicas at once, QUEUE_SIZE waiting
    page = httpx.get(f"{serve_url}/", timeout=10)  # the browser page, from the ingress
    assert page.status_code == 200 and "content-security-policy" in page.headers


def test_a_conversation_round_trip_through_the_deployments(serve_url: str) -> None:
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        response = http.post(
            "/conversation", files={"audio_file": ("speech.wav", (DATA / "speech.wav").read_bytes())}
        )
        assert response.status_code == 200, response.text
        turn = response.json()
        assert word_error_rate(SENTENCE, turn["transcript"]) <= 0.2, turn["transcript"]
        assert turn["reply"].strip()
        assert set(turn["timings"]) == TURN_TIMINGS
        audio = http.get(turn["audio_url"])
        assert audio.status_code == 200
        assert decode_audio(audio.content).duration > 0.3
        # The reply was stored by the ingress: the conversation goes on from it.
        stored = http.get(f"/conversations/{turn['conversation_id']}").json()["turns"]
        assert [t["role"] for t in stored] == ["user", "assistant"]
        # Several sentences: synthesised one call each, across the TTS replicas, joined in order.
        text = "The first sentence is short. The second one is a little longer. And a third one ends it."
        spoken = http.post("/tts", json={"text": text, "format": "wav"})
        assert spoken.status_code == 200
        heard = http.post("/stt", files={"file": ("tts.wav", spoken.content)}).json()["text"]
        assert word_error_rate(text, heard) <= 0.25, heard


def test_a_streamed_turn_stays_streamed(serve_url: str) -> None:
    """The reply's deltas and its audio come through the proxy as they are made, not at the end."""
    arrivals: list[tuple[float, str]] = []
    lines: list[str] = []
    with (
        httpx.Client(base_url=serve_url, timeout=120) as http,
        http.stream(
            "POST",
            "/conversation",
            files={"audio_file": ("speech.wav", (DATA / "speech.wav").read_bytes())},
            data={"stream": "true"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("event:"):
                arrivals.append((time.perf_counter(), line[6:].strip()))
    events = parse_sse(lines)
    names = [name for name, _ in events]
    assert names[0] == "transcript" and names[-1] == "done", names
    assert names.count("reply_delta") >= 2 and "audio" in names
    first_audio = next(data for name, data in events if name == "audio")
    assert decode_audio(base64.b64decode(str(first_audio["audio"]))).duration > 0.2
    first_delta = next(at for at, name in arrivals if name == "reply_delta")
    done = next(at for at, name in arrivals if name == "done")
    assert done - first_delta > 0.1, "the reply arrived all at once"


def test_the_realtime_websocket_through_the_proxy(serve_url: str) -> None:
    from websockets.sync.client import connect

    speech = decode_audio((DATA / "speech.wav").read_bytes(), 16000).samples
    pcm = (np.concatenate([np.zeros(8000), speech, np.zeros(24000)]) * 32767).astype("<i2").tobytes()
    got: list[dict[str, Any]] = []
    audio = 0
    with connect(serve_url.replace("http://", "ws://") + "/ws/conversation", max_size=2**22) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for start in range(0, len(pcm), 640):
            ws.send(pcm[start : start + 640])
        while not got or got[-1]["type"] not in ("turn_end", "error"):
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                audio += len(message)
            else:
                got.append(json.loads(message))
    assert got[-1]["type"] == "turn_end", got
    transcript = next(e for e in got if e["type"] == "transcript")
    assert word_error_rate(SENTENCE, transcript["text"]) <= 0.2
    assert audio > 0


def test_bad_input_is_a_json_error_not_a_500(serve_url: str) -> None:
    response = httpx.post(
        f"{serve_url}/stt", files={"file": ("noise.wav", os.urandom(4000), "audio/wav")}, timeout=30
    )
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"]
    assert httpx.get(f"{serve_url}/health/ready", timeout=10).status_code == 200


def test_a_burst_past_the_replicas_is_refused_with_when_to_retry_and_the_rest_served(serve_url: str) -> None:
    """Thirty long syntheses at once on two TTS replicas: the ingress admits what its budget and
    queue allow and refuses the rest at once, a 503 with Retry-After that Serve's proxy passes to
    the client as it is (Serve retries nothing); every admitted one is whole. Counts, not times."""
    text = " ".join(f"This is sentence number {n} of a long answer read aloud." for n in range(1, 13))

    def synthesise(_: int) -> httpx.Response:
        return httpx.post(f"{serve_url}/tts", json={"text": text}, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(synthesise, range(30)))
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 503]
    assert len(served) + len(refused) == 30, sorted({a.status_code for a in answers})
    assert served and refused
    for answer in refused:
        assert answer.json()["error"]["code"] == "overloaded"
        assert int(answer.headers["Retry-After"]) >= 1
    for answer in served:
        audio = decode_audio(answer.content)
        assert audio.duration > 20  # twelve sentences, whole
    metrics = httpx.get(f"{serve_url}/metrics", timeout=10).text
    assert 'voice_dialogue_model_refusals_total{model="tts"' in metrics


def test_the_gpu_check_script_against_the_deployment(serve_url: str) -> None:
    """The whole-stack check drives the Serve application as it drives a single server."""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gpu_check", "--url", serve_url, "--allow-cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ray Serve x2" in result.stdout  # /health: where each model runs


@pytest.mark.parametrize("name", ["config.yaml", "config.cpu.yaml"])
def test_the_shipped_configs_are_valid_serve_configs(name: str) -> None:
    """Both files pass Serve's own schema (what `serve run` / `serve deploy` check) and the
    builder's arguments; the GPU one asks for GPU shares, the CPU one fits 2 cores."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from backend.serve.app import ServeArgs

    config = yaml.safe_load((REPO / "backend" / "serve" / name).read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "backend.serve.app:build_app"
    args = ServeArgs.model_validate(application["args"])
    stages = (args.stt, args.chat, args.tts)
    if name == "config.yaml":
        assert all(0 < stage.num_gpus < 1 for stage in stages)
        assert args.env["STT_MODEL_NAME"] == "large-v3"
    else:
        assert all(stage.num_gpus == 0 for stage in stages)
        assert sum(s.num_cpus * s.num_replicas for s in stages) + args.ingress_cpus <= 2


def test_a_wrong_argument_is_refused_at_build() -> None:
    from pydantic import ValidationError

    from backend.serve.app import build_app

    with pytest.raises(ValidationError, match="num_replica"):
        build_app({"stt": {"num_replica": 2}})


def test_several_ingress_replicas_without_a_shared_database_are_refused_at_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from backend.serve.app import ServeArgs

    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        ServeArgs.model_validate({"ingress_replicas": 2})
    shared = ServeArgs.model_validate(
        {"ingress_replicas": 2, "env": {"DATABASE_URL": "postgresql://db/voice"}}
    )
    assert shared.ingress_replicas == 2


_REPLICA_ENV_PROBE = """
import json, os, sys
from backend.app.backends import registry
from backend.serve.deployments import ChatDeployment, STTDeployment

seen = {}

def watched(name, load):
    def loading(settings):
        openmp = [line.split()[-1] for line in open("/proc/self/maps") if "gomp" in line or "libomp" in line]
        seen[name] = {"GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"), "openmp_loaded": openmp}
        return load(settings)
    return loading

registry.load_stt = watched("stt", registry.load_stt)
registry.load_chat = watched("chat", registry.load_chat)
for deployment in (STTDeployment, ChatDeployment):
    deployment.func_or_class()  # the replica's class, as Serve constructs it in its actor
print(json.dumps(seen))
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "10000"), ("500", "500")])
def test_model_replicas_set_gomp_spincount_before_their_engines_load(
    tmp_path: Path, given: str | None, expected: str
) -> None:
    """As `python -m backend.app` does: GOMP_SPINCOUNT=10000 unless the user set it, in place
    before the engine's OpenMP runtime (CTranslate2's, llama.cpp's libgomp) is loaded, which reads
    it once. The replicas' own classes, in a fresh process, loading the real embedded models."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env.update(server_settings(tmp_path, LOG_FORMAT="text"))
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    result = subprocess.run(
        [sys.executable, "-c", _REPLICA_ENV_PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    for stage in ("stt", "chat"):
        assert seen[stage]["GOMP_SPINCOUNT"] == expected, seen
    assert seen["stt"]["openmp_loaded"] == [], seen  # the first engine: no OpenMP runtime yet
