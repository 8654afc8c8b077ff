"""Admission by expected wait with the real models: a burst of transcriptions against the STT model
held busy, admitted as far as its measured service time allows and the rest refused at once; the
HTTP answer (503, Retry-After) and /metrics. Counts, not wall-clock bounds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from backend.app.container import Services
from backend.app.core.backlog import Budget, budget, measured_units
from backend.app.core.errors import OverloadedError
from backend.app.core.values import TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, clip


@pytest.fixture
def held(services: Services) -> Iterator[threading.Event]:
    """The STT model held busy by a call that waits for the event (given back afterwards), after
    one real transcription (so that its estimate is the model's own). The holding call's time is
    not recorded as a transcription's."""
    asyncio.run(services.stt.transcribe(clip("speech.wav"), TranscribeOptions(language="en")))
    gate = threading.Event()
    worker = services.stt.worker

    def hold() -> None:
        measured_units(None)
        gate.wait(60)

    holder = threading.Thread(target=lambda: asyncio.run(worker.run(hold)))
    holder.start()
    while worker.load()[0] == 0:
        threading.Event().wait(0.001)
    yield gate
    gate.set()
    holder.join()


def test_a_burst_of_transcriptions_is_admitted_by_the_models_own_service_time(
    services: Services, held: threading.Event
) -> None:
    stt = services.stt
    data = clip("speech.wav")
    options = TranscribeOptions(language="en")
    worker = stt.worker
    # Both as the rule reads them: scaled by how late admitted work has been (`slowdown`).
    wait = worker.expected_wait()
    cost = worker.times.estimate(worker.typical_units, "stt") * worker.backlog.slowdown()
    assert cost > 0
    admit = 2
    limit = wait + cost * (admit + 0.5)  # room for exactly two more, half a call to spare

    async def burst() -> tuple[list[str], list[str]]:
        budget.set(Budget("stt", limit))
        admitted, refusals = [], []
        for _ in range(6):
            try:
                worker.check()
            except OverloadedError as e:
                refusals.append(e.headers["Retry-After"])
                continue
            admitted.append(asyncio.create_task(stt.transcribe(data, options)))
            await asyncio.sleep(0)
        held.set()
        texts = [t.text for t in await asyncio.gather(*admitted)]
        return texts, refusals

    before = dict(worker.refused)
    texts, refusals = asyncio.run(burst())
    assert len(texts) == admit and len(refusals) == 6 - admit
    assert all(word_error_rate(SENTENCE, text) <= 0.2 for text in texts)  # admitted work is done right
    assert all(int(seconds) >= 1 for seconds in refusals)
    assert worker.refused["wait"] - before["wait"] == 6 - admit


def test_a_request_that_would_wait_past_its_budget_gets_a_503_with_when_to_retry(
    client: TestClient, services: Services, held: threading.Event
) -> None:
    worker = services.stt.worker
    backlog = [worker.backlog.add(20.0) for _ in range(2)]  # 40 s of work queued ahead
    try:
        files = {"file": ("speech.wav", clip("speech.wav"), "audio/wav")}
        refused = client.post("/stt", files=files)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert "ADMISSION_BUDGETS" in refused.json()["error"]["message"]
        # Refused before its body was read: the 40 s ahead pass the 3 s a transcription may wait
        # (the default stt budget), whatever its own size; it would fit about 37 s later.
        ahead = worker.expected_wait()
        assert abs(int(refused.headers["Retry-After"]) - (ahead - 3)) <= 2
        metrics = client.get("/metrics").text
        assert 'voice_dialogue_model_expected_wait_seconds{model="stt"}' in metrics
        assert 'voice_dialogue_model_refusals_total{model="stt",reason="wait"}' in metrics
    finally:
        for key in backlog:
            worker.backlog.done(key)
    held.set()
    assert client.post("/stt", files=files).status_code == 200
