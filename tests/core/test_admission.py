"""Admission by expected wait (core/admission.py, core/worker.py): the service-time estimate, the
backlog's expected wait, and the rule, under controlled bursts. No wall-clock asserts: the model is
held busy while the burst arrives, so what is admitted follows from the estimates alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from backend.app.core.admission import Gate, route_group
from backend.app.core.backlog import Backlog, Budget, ServiceTimes, budget, measured_units, work_units
from backend.app.core.errors import OverloadedError
from backend.app.core.worker import ModelWorker


def test_service_times_start_from_the_prior_and_follow_what_is_measured() -> None:
    times = ServiceTimes(prior_s=0.5)
    assert times.estimate(3.0) == 0.5
    times.record(3.0, 0.9)
    assert times.estimate(3.0) == pytest.approx(0.9)
    times.record(3.0, 0.3)
    assert 0.3 < times.estimate(3.0) < 0.9  # a moving mean: the newest call weighs ALPHA
    # Another size class is scaled from the nearest one seen, by size.
    assert times.estimate(24.0) == pytest.approx(times.estimate(3.0) * 24.0 / 3.0, rel=0.05)
    times.record(24.0, 4.0)
    assert times.estimate(24.0) == pytest.approx(4.0)


def test_the_backlog_counts_what_is_left_of_each_call() -> None:
    backlog = Backlog(parallel=1)
    first, second = backlog.add(2.0), backlog.add(3.0)
    assert backlog.expected_wait() == pytest.approx(5.0)
    backlog.started(first)
    assert 4.0 < backlog.expected_wait() <= 5.0  # the running one's cost less its time so far
    backlog.done(first)
    backlog.done(second)
    assert backlog.expected_wait() == 0.0
    two = Backlog(parallel=2)
    two.add(2.0)
    two.add(2.0)
    assert two.expected_wait() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/conversation", "turn"),
        ("/ws/conversation", "turn"),
        ("/v1/realtime", "turn"),
        ("/phone/twilio", "turn"),
        ("/stt", "stt"),
        ("/v1/audio/transcriptions", "stt"),
        ("/chat", "chat"),
        ("/v1/chat/completions", "chat"),
        ("/tts", "tts"),
        ("/v1/audio/speech", "tts"),
        ("/dev/captioned_speech", "tts"),
        ("/health", None),
        ("/conversations", None),
    ],
)
def test_route_groups(path: str, group: str | None) -> None:
    assert route_group(path) == group


@pytest.fixture
def held() -> Iterator[tuple[ModelWorker, threading.Event]]:
    """A worker whose model is held busy by a call that waits for the event."""
    worker = ModelWorker("stt", queue_size=100, prior_s=1.0)
    gate = threading.Event()
    yield worker, gate
    gate.set()
    worker.shutdown()


def burst(
    worker: ModelWorker, gate: threading.Event, limit: float, calls: int, units: float
) -> tuple[int, int]:
    """Hold the model, then send `calls` calls of `units` under a `limit`-second budget: (admitted,
    refused). All admitted calls then run to the end once the model is let go."""

    async def run() -> tuple[int, int]:
        work_units.set(units)
        holder = asyncio.create_task(worker.run(gate.wait, 30))
        while worker.load()[0] == 0:  # noqa: ASYNC110 - until the model thread takes the call
            await asyncio.sleep(0.001)
        budget.set(Budget("stt", limit))
        admitted: list[asyncio.Task[float]] = []
        refused = 0
        for _ in range(calls):
            try:
                worker.check()
            except OverloadedError as e:
                refused += 1
                assert int(e.headers["Retry-After"]) >= 1
                continue
            admitted.append(asyncio.create_task(worker.run(lambda: units)))
            await asyncio.sleep(0)  # let it be submitted (counted in the backlog)
        gate.set()
        await holder
        done = await asyncio.gather(*admitted)
        assert done == [units] * len(admitted)
        return len(admitted), refused

    return asyncio.run(run())


def test_a_burst_is_admitted_as_far_as_the_budget_and_the_rest_refused_at_once(
    held: tuple[ModelWorker, threading.Event],
) -> None:
    worker, gate = held
    worker.times.record(3.0, 1.0)  # a 3 s clip takes 1 s on this model
    # The holding call is expected to take 1 s, as each queued call.
    # With a 4.5 s budget: calls 1, 2, 3 expect to wait 1, 2, 3 s (+1 s of their own) -> admitted;
    # the fourth would wait 4 s and take 5 s -> refused, and every one after it.
    admitted, refused = burst(worker, gate, limit=4.5, calls=10, units=3.0)
    assert (admitted, refused) == (3, 7)
    assert worker.refused == {"queue": 0, "wait": 7}
    assert worker.expected_wait() == 0.0  # everything admitted has run


def test_an_idle_model_takes_any_request_and_no_budget_means_the_queue_only(
    held: tuple[ModelWorker, threading.Event],
) -> None:
    worker, _ = held
    worker.times.record(3.0, 10.0)  # far longer than the budget
    budget.set(Budget("stt", 1.0))
    worker.check(3.0)  # idle: taken
    budget.set(Budget("stt", None))
    worker.times.record(3.0, 10.0)
    worker.backlog.add(50.0)
    worker.check(3.0)  # no budget for the group: bounded by the queue only
    budget.set(None)


def test_a_call_that_learns_its_size_records_its_time_for_that_size() -> None:
    worker = ModelWorker("stt", queue_size=4, prior_s=0.5, typical_units=3.0)

    def decode_then_work() -> None:
        measured_units(40.0)  # an upload turns out to be 40 s of audio

    asyncio.run(worker.run(decode_then_work))
    worker.shutdown()
    # Recorded for 40 s (a call of no time at all), not for the typical 3 s, which keeps the prior.
    assert worker.times.estimate(40.0) < 0.01 and worker.times.estimate(3.0) < 0.01
    fresh = ModelWorker("stt", queue_size=4, prior_s=0.5, typical_units=3.0)
    assert fresh.times.estimate(3.0) == 0.5
    fresh.shutdown()


def test_a_turn_is_refused_as_a_whole_when_its_stages_would_pass_the_budget() -> None:
    stt, llm, tts = (ModelWorker(name, queue_size=10, prior_s=1.0) for name in ("stt", "chat", "tts"))
    turns = Gate("spoken turns", 5)
    stages = ((stt, 3.0), (llm, 1.0), (tts, 1.0))
    budget.set(Budget("turn", 4.0))
    turns.enter(stages).release()  # every stage idle: taken, however long the turn
    llm.backlog.started(llm.backlog.add(2.5))  # a reply being generated
    with pytest.raises(OverloadedError) as refused:
        turns.enter(stages)  # 2.5 s wait + 3 s of work > 4 s
    assert refused.value.headers["Retry-After"] == "2" and "chat" in refused.value.message
    assert turns.refused == 1 and turns.inside == 0  # nothing held for the refused turn
    budget.set(Budget("turn", 6.0))
    turns.enter(stages).release()
    budget.set(None)
    for worker in (stt, llm, tts):
        worker.shutdown()


def test_a_turn_holds_its_places_in_the_backlogs_until_its_work_takes_them() -> None:
    stt, tts = ModelWorker("stt", queue_size=4, prior_s=1.0), ModelWorker("tts", queue_size=4, prior_s=0.5)
    turns = Gate("spoken turns", 5)

    async def turn() -> tuple[float, float, float]:
        ticket = turns.enter(((stt, 3.0), (tts, 1.0)), reserve=("stt", "tts"))
        held = (stt.expected_wait(), tts.expected_wait())  # counted before any of it runs
        await stt.follow_up(lambda: None)  # its transcription takes up its place
        after = stt.expected_wait()
        ticket.release()  # it never spoke: its place on the TTS backlog is given back
        return held[0], held[1] + after, tts.expected_wait()

    (stt_held, tts_held_plus_after, tts_after) = asyncio.run(turn())
    assert stt_held == pytest.approx(1.0) and tts_held_plus_after == pytest.approx(0.5)
    assert tts_after == 0.0 and stt.expected_wait() == 0.0
    for worker in (stt, tts):
        worker.shutdown()
