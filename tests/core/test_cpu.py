"""Turns on the cores (core/cpu.py): one holder at a time, first come first served, a waiter whose
request goes away leaves the line, room left for a generating LLM; and the embedded LLM writing
its whole answer while an engine keeps taking turns beside it. Checked by counts and order, never
by a timer."""

from __future__ import annotations

import threading
import time

import pytest

from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.core.cancellation import WorkCancelled
from backend.app.core.cpu import CpuTurns, in_turns
from backend.app.core.values import ChatMessage, GenerationOptions
from tests.overlap import Overlap


def _wait_for(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        time.sleep(0.001)


def test_one_holder_at_a_time_in_the_order_asked() -> None:
    turns = CpuTurns(0.1)
    order: list[int] = []
    overlap = Overlap()

    def call(index: int) -> None:
        with turns.turn(), overlap.inside(0.002):
            order.append(index)

    threads = []
    with turns.turn():  # hold the cores while eight calls line up, one after another
        for index in range(8):
            thread = threading.Thread(target=call, args=(index,))
            thread.start()
            threads.append(thread)
            _wait_for(lambda index=index: turns.waiting() == index + 1)
    for thread in threads:
        thread.join()
    assert order == list(range(8)) and overlap.most == 1 and turns.waiting() == 0


def test_a_waiter_whose_request_went_away_leaves_the_line() -> None:
    turns = CpuTurns(0.1)
    gone = threading.Event()
    outcome: list[str] = []

    def call() -> None:
        try:
            with turns.turn(gone):
                outcome.append("ran")
        except WorkCancelled:
            outcome.append("left")

    with turns.turn():
        thread = threading.Thread(target=call)
        thread.start()
        _wait_for(lambda: turns.waiting() == 1)
        gone.set()
        thread.join()
        assert outcome == ["left"] and turns.waiting() == 0
    with turns.turn():  # the cores are free again
        pass


def test_while_the_llm_generates_a_unit_waits_for_its_room() -> None:
    ran: list[str] = []
    patient = CpuTurns(3600.0)  # the LLM's room outlasts the test: the unit runs once it ends
    with patient.generating():
        waiter = threading.Thread(target=lambda: _unit(patient, ran))
        waiter.start()
        _wait_for(lambda: patient.waiting() == 1)
        ran.append("llm done")
    waiter.join()
    assert ran == ["llm done", "unit"]
    eager = CpuTurns(0.0)  # no room asked for: the unit runs beside the generation
    with eager.generating():
        _unit(eager, ran)
        ran.append("llm done")
    assert ran[2:] == ["unit", "llm done"]


def _unit(turns: CpuTurns, ran: list[str]) -> None:
    with turns.turn():
        ran.append("unit")


def test_engines_sharing_the_cores_never_compute_at_once() -> None:
    """Two engines' work, one item per turn (a sentence, a Whisper window), never overlaps."""
    turns = CpuTurns(0.1)
    overlap = Overlap()

    def compute(index: int) -> int:
        with overlap.inside(0.003):
            return index

    def engine(results: list[int]) -> None:
        results.extend(in_turns((compute(i) for i in range(6)), turns))

    outputs: list[list[int]] = [[], []]
    threads = [threading.Thread(target=engine, args=(out,)) for out in outputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap.most == 1 and outputs == [list(range(6))] * 2


@pytest.mark.parametrize("stream", [False, True])
def test_the_llm_answers_whole_beside_an_engine_taking_turns(llm: LlamaCppChatBackend, stream: bool) -> None:
    """An engine taking unit after unit beside a generation alternates with it: both progress,
    and the answer is the one the LLM gives alone (greedy), never cut."""
    messages = [ChatMessage("user", "Write a long story about a dragon who learns to fly.")]
    options = GenerationOptions(max_tokens=40, temperature=0.0)
    alone = llm.chat(messages, options)
    turns = CpuTurns(0.02)
    done = threading.Event()
    units = 0

    def other_engine() -> None:
        nonlocal units
        while not done.is_set():
            with turns.turn():
                units += 1
                sum(i * i for i in range(20_000))  # a unit of work on this core

    shared_cores, llm.cpu = llm.cpu, turns  # the session's services' engine: put back after
    neighbour = threading.Thread(target=other_engine)
    neighbour.start()
    try:
        shared = (
            "".join(llm.chat_stream(messages, options)).strip() if stream else llm.chat(messages, options)
        )
    finally:
        done.set()
        neighbour.join()
        llm.cpu = shared_cores
    assert units > 3 and shared == alone
