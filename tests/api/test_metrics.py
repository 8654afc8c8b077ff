"""GET /metrics: Prometheus figures that move with real traffic on the embedded models."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backend.app.container import Services
from tests.conftest import clip

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"voice_dialogue_{name}", tuple(sorted(labels.items()))), 0.0)


def stage_count(samples: Samples, stage: str) -> float:
    return value(samples, "stage_duration_seconds_count", stage=stage)


def test_requests_stages_and_audio_seconds_move_with_traffic(client: TestClient) -> None:
    before = scrape(client)
    speech = clip("speech.flac")
    assert client.post("/stt", files={"file": ("s.flac", speech, "audio/flac")}).status_code == 200
    tts = client.post("/tts", json={"text": "The metrics are counting this sentence."})
    assert tts.status_code == 200
    assert (
        client.post("/conversation", files={"audio_file": ("s.flac", speech, "audio/flac")}).status_code
        == 200
    )
    assert client.post("/tts", json={"text": ""}).status_code == 422
    assert client.get("/conversations/no-such-id").status_code == 404
    assert client.get("/some/scanner/path").status_code == 404
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("http_requests_total", method="POST", route="/stt", status="200") == 1
    assert grew("http_requests_total", method="POST", route="/tts", status="200") == 1
    assert grew("http_requests_total", method="POST", route="/tts", status="422") == 1
    assert grew("http_requests_total", method="POST", route="/conversation", status="200") == 1
    # Routes are labelled by their template, and paths that match nothing share one label.
    assert (
        grew("http_requests_total", method="GET", route="/conversations/{conversation_id}", status="404") == 1
    )
    assert grew("http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert not any("scanner" in str(labels) or "no-such-id" in str(labels) for _, labels in after)
    assert grew("http_request_duration_seconds_count", method="POST", route="/stt", status="200") == 1
    assert grew("http_request_duration_seconds_sum", method="POST", route="/stt", status="200") > 0.05

    # /stt and the turn's STT; /tts; the turn's LLM and TTS and its end-to-first-audio.
    assert stage_count(after, "stt") - stage_count(before, "stt") == 2
    assert stage_count(after, "tts") - stage_count(before, "tts") == 2
    assert stage_count(after, "tts_first_audio") - stage_count(before, "tts_first_audio") == 2
    for stage in ("llm_first_token", "llm", "first_audio"):
        assert stage_count(after, stage) - stage_count(before, stage) == 1, stage
    first = grew("stage_duration_seconds_sum", stage="llm_first_token")
    assert 0 < first <= grew("stage_duration_seconds_sum", stage="llm")

    # speech.flac is 3.3 s and was transcribed twice; /tts spoke about 2-3 s and the reply more.
    assert grew("audio_transcribed_seconds_total") == pytest.approx(2 * 3.26, abs=0.1)
    assert grew("audio_synthesized_seconds_total") > 2.0


def test_model_queues_cache_and_load_times_are_reported(client: TestClient, services: Services) -> None:
    worker = services.tts.worker
    release = threading.Event()
    runner = threading.Thread(target=lambda: asyncio.run(worker.run(release.wait, 30)))
    runner.start()
    held = worker.admit()  # a stream's slot, taken before its response starts
    try:
        for _ in range(100):
            if worker.load()[0] == 1:
                break
            threading.Event().wait(0.02)
        busy = scrape(client)
    finally:
        release.set()
        runner.join()
        held.release()
    assert value(busy, "model_busy", model="tts") == 1
    assert value(busy, "model_queue_depth", model="tts") == 1
    assert value(busy, "model_capacity", model="tts") == worker.capacity
    idle = scrape(client)
    assert value(idle, "model_busy", model="tts") == 0 and value(idle, "model_queue_depth", model="tts") == 0

    cache = services.tts.cache
    services.tts.cache.get_or_create(b"a voice made up for the metrics test", lambda raw: len(raw))
    services.tts.cache.get_or_create(b"a voice made up for the metrics test", lambda raw: len(raw))
    counted = scrape(client)
    stats = cache.stats()
    assert value(counted, "speaker_cache_hits_total") == stats.hits >= 1
    assert value(counted, "speaker_cache_misses_total") == stats.misses >= 1

    loads = {
        dict(labels)["stage"]: seconds
        for (name, labels), seconds in counted.items()
        if name == "voice_dialogue_model_load_seconds"
    }
    assert set(loads) == {"stt", "chat", "tts"} and all(seconds > 0 for seconds in loads.values())
    assert counted[("process_resident_memory_bytes", ())] > 100e6  # the standard process figures


def test_realtime_sessions_and_openmetrics(client: TestClient) -> None:
    with client.websocket_connect("/ws/conversation") as ws:
        ws.send_json({"type": "start", "sample_rate": 16000})
        assert ws.receive_json()["type"] == "ready"
        assert value(scrape(client), "realtime_sessions") == 1
    assert value(scrape(client), "realtime_sessions") == 0
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
