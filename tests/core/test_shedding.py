"""What makes admitted work finish in its estimated time under overload (core/backlog.py,
core/admission.py, core/ordered.py, core/cpu.py, core/shedding.py): work runs in the order it was
admitted, a call's cost is its share of the cores, estimates scale by how late admitted work has
been, a group refused lately gets its fair share, a request refused whatever its size is refused
before its body is read, and a client that comes back before its Retry-After gets its refusal at
that time. Checked by counts, order and a clock the test moves, never by a timer."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backend.app.core import backlog as backlog_module
from backend.app.core.admission import Gate, refuse_early
from backend.app.core.backlog import Backlog, Budget, Share, budget
from backend.app.core.cpu import CpuTurns
from backend.app.core.errors import OverloadedError
from backend.app.core.order import next_order, order
from backend.app.core.ordered import OrderedThreads
from backend.app.core.shedding import EarlyReturnMiddleware
from backend.app.core.worker import ModelWorker


class Clock:
    """time.monotonic for core/backlog.py, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(backlog_module.time, "monotonic", fake)
    return fake


def _wait_for(condition: Any) -> None:
    while not condition():
        time.sleep(0.001)


def test_queued_calls_run_by_their_place_in_the_order_of_admission() -> None:
    threads = OrderedThreads("test", 1)
    busy, ran = threading.Event(), []
    holder = threads.submit(0, lambda: busy.wait(10))
    _wait_for(holder.running)
    futures = [threads.submit(place, lambda place=place: ran.append(place)) for place in (7, 3, 5, 3)]
    dropped = threads.submit(4, lambda: ran.append(4))
    assert dropped.cancel()  # a call dropped while it waits is skipped
    busy.set()
    for future in futures:
        future.result(10)
    assert ran == [3, 3, 5, 7]  # by place, then by arrival
    threads.shutdown()
    with pytest.raises(RuntimeError):
        threads.submit(1, lambda: None)


def test_a_worker_runs_work_admitted_earlier_first_whenever_its_calls_arrive() -> None:
    worker = ModelWorker("chat", queue_size=8)
    busy, ran = threading.Event(), []

    async def scenario() -> None:
        holder = asyncio.create_task(worker.run(busy.wait, 10))
        while worker.load()[0] == 0:  # noqa: ASYNC110 - until the model thread takes it
            await asyncio.sleep(0.001)
        first = worker.admit()  # a turn's reply slot, say: admitted first, its call comes later
        second = worker.admit()
        later = asyncio.create_task(second.run(ran.append, "admitted second"))
        await asyncio.sleep(0.01)  # it reaches the queue first
        earlier = asyncio.create_task(first.run(ran.append, "admitted first"))
        await asyncio.sleep(0.01)
        busy.set()
        await asyncio.gather(holder, later, earlier)

    asyncio.run(scenario())
    worker.shutdown()
    assert ran == ["admitted first", "admitted second"]


def test_turns_on_the_cores_go_by_the_order_of_admission() -> None:
    turns = CpuTurns(0.1)
    ran: list[int] = []
    places = [next_order() for _ in range(3)]

    def unit(place: int) -> None:
        order.set(place)  # as a worker thread sets its call's place
        with turns.turn():
            ran.append(place)

    threads = []
    with turns.turn():  # the cores held while units line up, the latest admitted first
        for count, place in enumerate(reversed(places), start=1):
            thread = threading.Thread(target=unit, args=(place,))
            thread.start()
            threads.append(thread)
            _wait_for(lambda count=count: turns.waiting() == count)
    for thread in threads:
        thread.join(10)
    assert ran == places


def test_a_calls_cost_is_its_share_of_the_cores_less_its_wait_for_a_turn(clock: Clock) -> None:
    backlog = Backlog()
    alone = Share(backlog)
    clock.now += 1.0  # alone for 1 s
    other = Share(backlog)
    clock.now += 2.0  # two at once for 2 s: 1 s each
    assert other.end() == pytest.approx(1.0)
    alone.pause()  # waiting for its turn on the cores: not its work
    clock.now += 5.0
    alone.resume()
    clock.now += 0.5
    assert alone.end() == pytest.approx(1.0 + 1.0 + 0.5)


def test_estimates_scale_by_how_late_admitted_work_has_been(clock: Clock) -> None:
    backlog = Backlog()
    assert backlog.slowdown() == 1.0
    for _ in range(20):  # each call expected to take 1 s, done in 2 s
        key = backlog.add(1.0)
        backlog.started(key)
        clock.now += 2.0
        backlog.done(key)
    assert backlog.slowdown() == pytest.approx(2.0, rel=0.05)
    queued = backlog.add(1.0)
    assert backlog.expected_wait() == pytest.approx(2.0, rel=0.05)
    clock.now += 100.0  # work under way, however slow: news to come, the factor holds
    assert backlog.slowdown() == pytest.approx(2.0, rel=0.05)
    unused = backlog.add(1.0)
    backlog.done(unused)  # given back unused (never started): says nothing of the pace
    backlog.done(queued, learn=False)
    assert backlog.slowdown() == pytest.approx(2.0, rel=0.05)
    clock.now += 10.0  # nothing admitted for SLOWDOWN_FADES_S: still as learnt
    assert backlog.slowdown() == pytest.approx(2.0, rel=0.05)
    clock.now += 10.0  # then it fades towards 1
    assert backlog.slowdown() == pytest.approx(2.0 ** (1 / math.e), rel=0.05)
    clock.now += 60.0
    assert backlog.slowdown() == pytest.approx(1.0, abs=0.01)


def test_a_group_refused_lately_holds_the_others_to_the_wait_it_could_take(clock: Clock) -> None:
    backlog = Backlog()
    assert backlog.fair_wait("tts") == float("inf")
    backlog.wanted("chat", 0.8)
    backlog.wanted("chat", 0.5)  # its most admissible request counts
    assert backlog.fair_wait("tts") == pytest.approx(0.8)
    assert backlog.fair_wait("chat") == float("inf")  # a group is not held back by itself
    backlog.wanted("turn", 0.1)  # spoken turns go ahead of what is admitted: they hold no one back
    assert backlog.fair_wait("tts") == pytest.approx(0.8)
    assert backlog.fair_wait("turn") == pytest.approx(0.8)  # but are held back themselves
    backlog.wanted("stt", -1.0)  # a request whose own work passes its budget: no room at all
    assert backlog.fair_wait("tts") == 0.0
    clock.now += 3.0  # nobody refused since: every group is free again
    assert backlog.fair_wait("tts") == float("inf")


def test_a_request_that_no_size_could_fit_is_refused_before_its_body_is_read() -> None:
    stt, chat, tts = (ModelWorker(name, queue_size=8, prior_s=0.5) for name in ("stt", "chat", "tts"))
    try:
        token = budget.set(Budget("turn", 5.0))
        assert refuse_early((stt, chat, tts), whole=True) is None  # idle
        for worker in (chat, chat, tts):  # work waiting: a turn goes ahead of all but one call
            worker.backlog.add(1.5)
        assert refuse_early((stt, chat, tts), whole=True) is None  # 3 s: one call on each
        chat.backlog.started(1)
        tts.backlog.started(1)
        assert refuse_early((stt, chat, tts), whole=True) is None  # 4.5 s: a small turn may fit
        stt.backlog.started(stt.backlog.add(1.0))
        refusal = refuse_early((stt, chat, tts), whole=True)  # 5.5 s ahead: no turn fits 5 s
        assert refusal is not None and refusal.status_code == 503
        assert refusal.headers["Retry-After"] == "1" and "ADMISSION_BUDGETS" in refusal.message
        assert chat.backlog.fair_wait("chat") == float("inf")  # the refused turn holds no one back
        budget.reset(token)
        budget.set(Budget("chat", 2.0))
        refusal = refuse_early((chat,))
        assert refusal is not None  # 3 s ahead of a /chat (it goes ahead of none), over its 2 s
        budget.set(Budget("chat", None))
        assert refuse_early((chat,)) is None  # no budget for the group: the queue bounds it
    finally:
        budget.set(None)
        for worker in (stt, chat, tts):
            worker.shutdown()


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EarlyReturnMiddleware, list[float]]]:
    """The middleware over an app that refuses every request (Retry-After: 3), its sleeps recorded
    instead of slept."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"3")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    monkeypatch.setattr("backend.app.core.shedding.asyncio.sleep", sleep)
    yield EarlyReturnMiddleware(refuse, clients=2), slept


def _call(app: EarlyReturnMiddleware, client: tuple[str, int]) -> int:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/tts", "client": client, "headers": []}
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_a_client_back_before_its_retry_after_gets_its_refusal_at_that_time(
    paced: tuple[EarlyReturnMiddleware, list[float]],
) -> None:
    app, slept = paced
    assert _call(app, ("10.0.0.1", 5000)) == 503 and slept == []  # a first refusal: at once
    assert _call(app, ("10.0.0.1", 5000)) == 503  # back at once on the same connection
    assert len(slept) == 1 and 2.5 < slept[0] <= 3.0  # held until its Retry-After
    assert _call(app, ("10.0.0.2", 6000)) == 503 and len(slept) == 1  # another client: at once
    _call(app, ("10.0.0.3", 7000))  # a third client: the oldest remembered is forgotten (clients=2)
    assert _call(app, ("10.0.0.1", 5000)) == 503 and len(slept) == 1


def test_a_turn_refused_lately_holds_no_one_back_and_gets_the_stages_when_idle() -> None:
    stt, chat, tts = (ModelWorker(name, queue_size=8, prior_s=2.0) for name in ("stt", "chat", "tts"))
    turns = Gate("spoken turns", 4)
    stages = ((stt, 3.0), (chat, 1.0), (tts, 1.0))
    try:
        budget.set(Budget("turn", 5.0))
        chat.backlog.started(chat.backlog.add(1.0))  # a reply under way: 1 s + 6 s passes 5 s
        with pytest.raises(OverloadedError):
            turns.enter(stages)  # refused: the turn now wants in, and has no room to spare
        budget.set(Budget("tts", 3.0))
        tts.check(1.0)  # the TTS stage is idle: taken (a turn would go ahead of it anyway)
        budget.set(Budget("turn", 5.0))
        chat.backlog.done(1)
        turns.enter(stages).release()  # every stage idle: the turn gets them, however long it is
    finally:
        budget.set(None)
        for worker in (stt, chat, tts):
            worker.shutdown()
