"""Spoken turns go ahead of single-stage work (core/backlog.py, core/admission.py, core/cpu.py):
their places in the order of admission come before those of the single-stage requests admitted in
the last AHEAD_S (not of older ones), their expected wait counts only what they wait for, a call
holding the thread a turn waits for goes at the turn's pace, and a one-thread engine's unit of
single-stage work leaves a turn's reply room. Checked by order, counts and a clock the test moves,
never by a timer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backend.app.core import backlog as backlog_module
from backend.app.core.admission import Gate
from backend.app.core.backlog import Backlog, Budget, budget
from backend.app.core.cpu import CpuTurns
from backend.app.core.errors import OverloadedError
from backend.app.core.order import AHEAD_S, goes_ahead, next_order, order, urgency, waiting_behind
from backend.app.core.ordered import OrderedThreads
from backend.app.core.worker import ModelWorker


class Clock:
    """time.monotonic and time.monotonic_ns for core/backlog.py, moved by the test."""

    def __init__(self) -> None:
        self.now = time.monotonic() + 1e6  # after every place in the order given so far

    def __call__(self) -> float:
        return self.now

    def ns(self) -> int:
        return round(self.now * 1e9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(backlog_module.time, "monotonic", fake)
    monkeypatch.setattr(backlog_module.time, "monotonic_ns", fake.ns)
    return fake


@pytest.fixture
def turn_budget() -> Iterator[None]:
    token = budget.set(Budget("turn", 5.0))
    yield
    budget.reset(token)


def _wait_for(condition: Any) -> None:
    while not condition():
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
    queued = backlog.add(2.0)  # a /chat admitted, not begun
    backlog.add(1.0, ahead=True)  # a turn admitted before
    assert backlog.expected_wait() == pytest.approx(3.0)  # single-stage work waits for both
    assert backlog.expected_wait(ahead=True) == pytest.approx(1.0)  # a turn goes ahead of the /chat
    stream = backlog.add(4.0, step=0.5)  # a long text, spoken sentence by sentence
    backlog.started(stream)
    assert backlog.expected_wait(ahead=True) == pytest.approx(1.5)  # its one sentence under way
    backlog.started(queued)
    assert backlog.expected_wait(ahead=True) == pytest.approx(3.5)  # a call once begun runs on
    clock.now += AHEAD_S + 0.5
    fresh = backlog.add(2.0)
    assert backlog.expected_wait(ahead=True) == pytest.approx(0.2 + 1.0 + 0.4, abs=0.01)
    del fresh  # admitted just now: a turn goes ahead of it; the others are older than AHEAD_S


def test_turns_and_single_stage_work_learn_their_slowdown_apart(clock: Clock) -> None:
    backlog = Backlog()
    chat = backlog.add(1.0)
    backlog.started(chat)
    clock.now += 3.0  # overtaken by turns: three times as long as expected
    backlog.done(chat)
    assert backlog.slowdown() == pytest.approx(3.0)
    assert backlog.slowdown(ahead=True) == 1.0  # turns are not made to look slower by it


def test_a_turn_is_admitted_past_queued_single_stage_work_that_refuses_more_of_it(
    turn_budget: None,
) -> None:
    stt, chat, tts = (ModelWorker(name, queue_size=16, prior_s=0.5) for name in ("stt", "chat", "tts"))
    turns = Gate("spoken turns", 4)
    stages = ((stt, 1.0), (chat, 1.0), (tts, 1.0))
    try:
        for _ in range(8):
            chat.backlog.add(1.0)  # 8 s of /chat admitted, none begun
        budget.set(Budget("chat", 4.0))
        with pytest.raises(OverloadedError):
            chat.check(1.0)  # a /chat would wait 8 s
        budget.set(Budget("turn", 5.0))
        ticket = turns.enter(stages)  # a turn waits for none of it
        assert goes_ahead(order.get())
        ticket.release()
        busy = chat.backlog.add(4.5)
        chat.backlog.started(busy)  # a reply under way: the turn would wait for it
        with pytest.raises(OverloadedError):
            turns.enter(stages)
        assert turns.refused == 1
    finally:
        for worker in (stt, chat, tts):
            worker.shutdown()


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
