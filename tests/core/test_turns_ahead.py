"""Spoken turns go ahead of single-stage work (core/backlog.py, core/admission.py, core/cpu.py):
their places in the order of admission come before those of the single-stage requests admitted in
the last AHEAD_S (not of older ones), their expected wait counts only what they wait for, a call
holding the thread a turn waits for goes at the turn's pace, and a one-thread engine's unit of
single-stage work leaves a turn's reply room. Checked by order, counts and a clock the test moves,
never by a timer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backend.app.core import backlog as backlog_module
from backend.app.core import order as order_module
from backend.app.core.admission import Gate, refuse_early, reservations
from backend.app.core.backlog import FAIR_S, Backlog, Budget, budget
from backend.app.core.cpu import CpuTurns
from backend.app.core.errors import OverloadedError
from backend.app.core.order import AHEAD_S, goes_ahead, next_order, order, urgency, waiting_behind
from backend.app.core.ordered import OrderedThreads
from backend.app.core.worker import ModelWorker


class Clock:
    """time.monotonic and time.monotonic_ns for core/backlog.py, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def ns(self) -> int:
        return round(self.now * 1e9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(backlog_module.time, "monotonic", fake)
    monkeypatch.setattr(backlog_module.time, "monotonic_ns", fake.ns)
    monkeypatch.setattr(order_module, "_last_order", [-1, 0])  # places from this clock, restored after
    return fake


@pytest.fixture(autouse=True)
def fresh_request() -> Iterator[None]:
    """Each test as a new request: no place in the order, no budget, no reservations."""
    tokens = (order.set(None), budget.set(None), reservations.set(None))
    yield
    order.reset(tokens[0])
    budget.reset(tokens[1])
    reservations.reset(tokens[2])


@pytest.fixture
def turn_budget() -> Iterator[None]:
    token = budget.set(Budget("turn", 5.0))
    yield
    budget.reset(token)


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10  # only so that a regression fails rather than hangs
    while not condition():
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.001)


def test_a_turn_goes_ahead_of_single_stage_work_admitted_lately_not_of_older_work(clock: Clock) -> None:
    old = next_order()
    clock.now += AHEAD_S + 1.0
    recent = next_order()
    clock.now += 1.0
    turn, later_turn = next_order(ahead=True), next_order(ahead=True)
    assert goes_ahead(turn) and goes_ahead(later_turn) and not goes_ahead(recent)
    assert old < turn < later_turn < recent  # first the older single-stage work, then turns in order
    assert next_order() > recent  # single-stage work still in its own order


def test_a_turns_wait_counts_only_what_it_waits_for(clock: Clock) -> None:
    backlog = Backlog()
    queued = [backlog.add(2.0) for _ in range(3)]  # three /chat admitted, none begun
    backlog.add(1.0, ahead=True)  # a turn admitted before
    assert backlog.expected_wait() == pytest.approx(7.0)  # single-stage work waits for all of it
    # A turn waits for the turn before it, and for one /chat that may begin before it arrives.
    assert backlog.expected_wait(ahead=True) == pytest.approx(1.0 + 2.0)
    stream = backlog.add(4.0, step=0.5)  # a long text, spoken sentence by sentence
    backlog.started(stream)
    assert backlog.expected_wait(ahead=True) == pytest.approx(1.0 + 0.5 + 2.0)  # one sentence
    backlog.started(queued[0])
    assert backlog.expected_wait(ahead=True) == pytest.approx(1.0 + 0.5 + 2.0 + 2.0)  # runs on
    clock.now += AHEAD_S + 0.5
    backlog.add(2.0)  # admitted just now: a turn goes ahead of it, but not of the older ones
    left = 0.2 + 2.0 + 2.0 + 1.0 + 0.4  # begun ones past their cost: a tenth of it still
    assert backlog.expected_wait(ahead=True) == pytest.approx(left + 2.0, abs=0.01)


def test_a_turns_stage_learns_its_pace_from_when_the_turn_reaches_it(clock: Clock) -> None:
    backlog = Backlog()
    reply = backlog.add(1.0, ahead=True)  # admitted with its turn, which transcribes first
    clock.now += 3.0
    backlog.reached(reply)  # the turn's reply reaches the LLM
    backlog.started(reply)
    clock.now += 1.0
    backlog.done(reply)
    assert backlog.slowdown(ahead=True) == pytest.approx(1.0)  # on time, from where it arrived


def test_a_slowdown_faded_without_news_is_not_brought_back_by_the_next_call(clock: Clock) -> None:
    backlog = Backlog()
    for _ in range(20):  # expected 1 s, took 3 s
        key = backlog.add(1.0)
        backlog.started(key)
        clock.now += 3.0
        backlog.done(key)
    assert backlog.slowdown() == pytest.approx(3.0, rel=0.05)
    clock.now += 100.0  # no news: faded to 1
    key = backlog.add(1.0)
    backlog.started(key)
    clock.now += 1.0  # on time
    backlog.done(key)
    assert backlog.slowdown() == pytest.approx(1.0, abs=0.05)


def test_turns_and_single_stage_work_learn_their_slowdown_apart(clock: Clock) -> None:
    backlog = Backlog()
    chat = backlog.add(1.0)
    backlog.started(chat)
    clock.now += 3.0  # overtaken by turns: three times as long as expected
    backlog.done(chat)
    assert backlog.slowdown() == pytest.approx(3.0)
    assert backlog.slowdown(ahead=True) == 1.0  # turns are not made to look slower by it


def test_a_turn_is_admitted_past_queued_single_stage_work_and_leaves_it_its_share(clock: Clock) -> None:
    stt, chat, tts = (ModelWorker(name, queue_size=16, prior_s=0.5) for name in ("stt", "chat", "tts"))
    turns = Gate("spoken turns", 4)
    stages = ((stt, 1.0), (chat, 1.0), (tts, 1.0))
    try:
        for _ in range(8):
            chat.backlog.add(1.0)  # 8 s of /chat admitted, none begun
        budget.set(Budget("turn", 5.0))
        assert refuse_early([stt, chat, tts], whole=True) is None  # not refused before its body
        turns.enter(stages).release()  # it waits for one /chat at most: admitted
        assert goes_ahead(order.get())
        budget.set(Budget("chat", 4.0))
        assert refuse_early([chat]) is not None  # a /chat would wait 8 s
        with pytest.raises(OverloadedError):
            chat.check(1.0)
        budget.set(Budget("turn", 5.0))
        with pytest.raises(OverloadedError) as refused:
            turns.enter(stages)  # going ahead, it would add to the wait of /chat, refused lately
        assert "refused lately" in refused.value.message and "goes ahead" in refused.value.message
        assert int(refused.value.headers["Retry-After"]) >= 4  # until the backlog leaves /chat room
        clock.now += FAIR_S + 0.1  # /chat has not asked again
        turns.enter(stages).release()
        assert turns.refused == 1
    finally:
        for worker in (stt, chat, tts):
            worker.shutdown()


def test_a_realtime_turns_transcription_goes_ahead_too() -> None:
    worker = ModelWorker("stt", queue_size=4, prior_s=0.5)
    try:
        for group, ahead in (("turn", True), ("stt", False)):
            budget.set(Budget(group, 4.0))
            order.set(None)
            place = asyncio.run(worker.run(order.get))
            assert goes_ahead(place) is ahead
    finally:
        worker.shutdown()


def test_a_call_dropped_while_it_waited_holds_nothing_up() -> None:
    threads = OrderedThreads("test", 1)
    busy = threading.Event()
    holder = threads.submit(1, lambda: busy.wait(10))
    _wait_for(holder.running)
    dropped, kept = threads.submit(2, lambda: None), threads.submit(9, lambda: None)
    assert threads.first_waiting() == 2
    assert dropped.cancel()  # its request went away
    assert threads.first_waiting() == 9
    busy.set()
    kept.result(10)
    threads.shutdown()


def test_a_call_holding_the_thread_a_turn_waits_for_goes_at_the_turns_pace() -> None:
    threads = OrderedThreads("test", 1)
    mine, turn = next_order(), next_order(ahead=True)
    assert urgency(mine) == mine  # nothing waits behind it
    busy, seen = threading.Event(), []

    def running() -> None:  # as a worker's call: its stage's first waiting call is readable
        token = waiting_behind.set(threads.first_waiting)
        busy.wait(10)
        seen.append(urgency(mine))
        waiting_behind.reset(token)

    holder = threads.submit(mine, running)
    _wait_for(holder.running)
    queued = threads.submit(turn, lambda: None)
    busy.set()
    holder.result(10)
    queued.result(10)
    assert seen == [turn]


def test_a_one_thread_engines_single_stage_unit_gives_way_to_a_turns_reply() -> None:
    turns = CpuTurns(60.0)  # a reply's room longer than the test: a unit that gives way waits
    generating, release = threading.Event(), threading.Event()

    def reply(place: int) -> None:
        order.set(place)
        with turns.generating():
            generating.set()
            release.wait(10)

    def unit(place: int, done: list[int]) -> None:
        order.set(place)
        with turns.giving_way():
            done.append(place)

    for reply_place, unit_place, waits in (
        (next_order(ahead=True), next_order(), True),  # single-stage work beside a turn's reply
        (next_order(ahead=True), next_order(ahead=True), False),  # the turn's own speech
        (next_order(), next_order(), False),  # beside a /chat answer: shares the cores
    ):
        generating.clear()
        release.clear()
        done: list[int] = []
        replying = threading.Thread(target=reply, args=(reply_place,))
        replying.start()
        generating.wait(10)
        speaking = threading.Thread(target=unit, args=(unit_place, done))
        speaking.start()
        if waits:
            _wait_for(lambda: turns.waiting() == 1)  # it takes a turn, after the reply's room
            assert done == []
            release.set()  # the reply ends: the unit goes on
        speaking.join(10)
        assert done == [unit_place]
        release.set()
        replying.join(10)
