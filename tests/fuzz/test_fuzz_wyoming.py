"""Fuzzing the Wyoming port of a live server with hostile peers drawn from a seeded RNG
(wyoming_peers.py): header lines nested 1,200-5,000 deep, headers without an end (cut short, or
longer than the header limit), lengths that lie (more or fewer bytes than declared), huge lengths
(over the event limit, 5,001 digits, negative, of the wrong type), audio formats out of range, audio
declared at 1 kHz and 8 bits (cheap to send, costly once held) streamed without an audio-stop,
`transcribe` with transcript_names: 5, text holding a lone surrogate (\\ud800), unknown and
out-of-order events, idle, ping-only and slow peers, with valid requests between them. Then 32+ idle
or ping-only sockets at once from a few addresses, and held audio from many connections at once.

Every connection is answered within CASE_BOUND_S: an `error` event (never `internal_error`) and the
end of the stream when the event breaks the protocol; when the connection goes on, whatever the
event asked for and then the `pong` to the `ping` sent after it. Around the stage, `live.watched`
checks /health, the server's memory and its log. `make fuzz` (FUZZ_SCALE=10) sends ten times as
many.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

from backend.app.audio.pcm import stored_bytes
from tests.api.test_wyoming_abuse import connect, header, pong, read_event
from tests.fuzz.live import (
    CASE_BOUND_S,
    IDLE_S,
    MAX_AUDIO_SECONDS,
    SCALE,
    WYOMING_BUFFERED_MB,
    WYOMING_MAX_CONNECTIONS,
    WYOMING_PER_CLIENT,
    LiveServer,
    Watch,
    rng_for,
    server_errors,
    watched,
    wrong_answers,
)
from tests.fuzz.wyoming_peers import (
    Case,
    draw_cases,
    idle,
    long_audio_without_stop,
    streamed_text,
    valid_request,
)

CASES = 120 * SCALE
IDLE_SOCKETS = 40 * SCALE
HELD_AUDIO_ROUNDS = SCALE
HELD_AUDIO_STREAMS = 12
"""Streams at once: their audio, 20-59 s each at 1 kHz, is several times WYOMING_MAX_BUFFERED_MB."""
CONCURRENCY = 10
STT_RATE = 16_000
SENTINEL = header("ping", {"text": "sentinel"})
BUSY = ("overloaded",)
"""Error codes a valid request may get on a busy server: asked to retry, not refused."""


# --- running a case ------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    events: list[dict[str, Any]]
    closed: bool
    """The server ended the stream (rather than answering the sentinel)."""
    took: float
    silent: bool = False
    """Nothing more came for `case.within`, and the stream was still open."""


async def run_case(port: int, case: Case, source: str) -> Outcome:
    started = time.monotonic()
    reader, writer = await connect(port, source)
    events: list[dict[str, Any]] = []
    closed = False
    try:
        with contextlib.suppress(ConnectionError):
            for step in case.steps:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                writer.write(step)
                await writer.drain()
            if case.sentinel:
                writer.write(SENTINEL)
                await writer.drain()
        if case.leaves:
            return Outcome(events, True, time.monotonic() - started)
        while True:
            try:
                event = await read_event(reader, case.within)
            except TimeoutError:
                return Outcome(events, False, time.monotonic() - started, silent=True)
            except (ConnectionError, asyncio.IncompleteReadError):
                event = None
            if event is None:
                closed = True
                break
            events.append(event)
            if event["type"] == "pong" and event.get("data", {}).get("text") == "sentinel":
                break
    finally:
        writer.close()
    return Outcome(events, closed, time.monotonic() - started)


def problem(case: Case, outcome: Outcome) -> str | None:
    """What is wrong with how the server answered `case`, or None."""
    if case.leaves:
        return None
    if outcome.silent:
        return f"silence: nothing for {case.within:.0f} s after {[e['type'] for e in outcome.events]}"
    errors = [e.get("data", {}) for e in outcome.events if e["type"] == "error"]
    said = [f"{e.get('code')}: {e.get('text')}" for e in errors]
    if any(e.get("code") == "internal_error" for e in errors):
        return f"an internal_error: {said}"
    if case.error is not None and not any(w in s for s in said for w in case.error):
        return f"no error holding one of {case.error}: {said}"
    if case.error is None and any(e.get("code") not in BUSY for e in errors):
        return f"an error for a valid event: {said}"
    if case.closes is True and not outcome.closed:
        return "the connection was not closed after the error"
    if case.closes is False and outcome.closed:
        return f"the connection was closed without answering the sentinel ping: {said}"
    if case.answer and not any(e["type"] in case.answer for e in outcome.events):
        return f"no {case.answer} among {[e['type'] for e in outcome.events]}"
    return None


def describe(case: Case) -> str:
    shown = [s[:160] if isinstance(s, bytes) else s for s in case.steps[:4]]
    return f"{case.kind} ({len(case.steps)} steps): {shown}"


async def run_all(watch: Watch, port: int, cases: list[Case]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[str] = []

    async def one(index: int, case: Case) -> None:
        async with gate:
            source = f"127.0.{1 + index // 250 % 200}.{1 + index % 250}"
            outcome = await run_case(port, case, source)
            watch.count(case.kind, case.requests)
            found = problem(case, outcome)
            if found:
                failures.append(
                    f"{case.kind}: {found}\n  for {describe(case)}\n  events: {outcome.events[:5]}"
                )

    await asyncio.gather(*(one(i, c) for i, c in enumerate(cases)))
    return failures


# --- 32+ idle and ping-only sockets; held audio from many connections ----------------------------


async def idle_sockets(watch: Watch, port: int, count: int) -> list[str]:
    """`count` sockets at once from a few addresses, half of them pinging: no address holds more
    than WYOMING_MAX_CONNECTIONS_PER_CLIENT, nobody more than WYOMING_MAX_CONNECTIONS, the rest are
    refused with `overloaded`, and every accepted one is closed for idling (pings do not count)."""
    # Three in ten from one address (more than it may hold), the rest spread over others (together
    # more than the server holds).
    crowded, others = "127.0.250.1", [f"127.0.250.{i + 2}" for i in range(max(4, count // 10))]
    addresses = [crowded, *others]
    failures: list[str] = []
    accepted: dict[str, int] = {}
    refusals: list[str] = []
    opened = asyncio.Event()
    pending = count

    async def one(index: int) -> None:
        nonlocal pending
        source = crowded if index % 10 < 3 else others[index % len(others)]
        reader, writer = await connect(port, source)
        pending -= 1
        if not pending:
            opened.set()
        await opened.wait()  # all of them open before any is closed
        pinging = index % 2 == 0
        events: list[dict[str, Any]] = []

        async def pings() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(header("ping"))
                    await writer.drain()
                    await asyncio.sleep(0.3)

        pinger = asyncio.create_task(pings()) if pinging else None
        try:
            while (event := await read_event(reader, IDLE_S + 8)) is not None:
                events.append(event)
        except ConnectionError:
            pass
        except TimeoutError:
            events.append({"type": "silence", "data": {"code": f"still open after {IDLE_S + 8:g} s"}})
        finally:
            if pinger is not None:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
            writer.close()
            watch.count("idle_sockets", 1 + sum(e["type"] == "pong" for e in events))
        codes = [e["data"].get("code") for e in events if e["type"] == "error"]
        if codes == ["overloaded"]:
            refusals.append(next(e["data"]["text"] for e in events if e["type"] == "error"))
            return
        accepted[source] = accepted.get(source, 0) + 1
        if codes != ["idle_timeout"]:
            failures.append(
                f"idle_sockets: socket {index} ({'pinging' if pinging else 'idle'}): {events[-3:]}"
            )

    await asyncio.gather(*(one(i) for i in range(count)))
    most = max(accepted.values(), default=0)
    if most > WYOMING_PER_CLIENT or sum(accepted.values()) > WYOMING_MAX_CONNECTIONS:
        failures.append(f"idle_sockets: more connections held than allowed: {accepted}")
    if count > WYOMING_MAX_CONNECTIONS and not refusals:
        failures.append(f"idle_sockets: {count} sockets at once and none refused")
    for source in addresses:  # every slot comes back (within a moment: the server closes its side)
        for _ in range(25):
            answer = await pong(port, source)
            watch.count("idle_sockets", 1)
            if answer is not None and answer["type"] == "pong":
                break
            await asyncio.sleep(0.2)
        else:
            failures.append(f"idle_sockets: 5 s later, {source} still got {answer}")
    return failures


async def held_audio(watch: Watch, port: int, rng: random.Random, streams: int) -> list[str]:
    """Audio declared at 1 kHz and 8 bits from `streams` connections at once, each shorter than
    MAX_AUDIO_SECONDS and none stopped: what they hold together, counted as held (float32 at
    16 kHz, 64 bytes for each byte sent), stays within WYOMING_MAX_BUFFERED_MB; a stream that would
    pass it gets `overloaded`, and the others are not disturbed."""
    fmt = {"rate": 1_000, "width": 1, "channels": 1}
    limit = WYOMING_BUFFERED_MB * 1024 * 1024
    held: list[int] = []
    failures: list[str] = []
    writers: list[asyncio.StreamWriter] = []

    async def one(index: int) -> None:
        left, chunks = rng.randint(20_000, MAX_AUDIO_SECONDS * 1_000 - 1_000), []
        while left > 0:
            chunks.append(min(left, rng.randint(1_000, 10_000)))
            left -= chunks[-1]
        reader, writer = await connect(port, f"127.0.251.{index % 250 + 1}")
        writers.append(writer)  # held open until every stream has been answered
        writer.write(header("audio-start", fmt))
        for size in chunks:
            writer.write(header("audio-chunk", fmt, bytes(size)))
        writer.write(SENTINEL)
        await writer.drain()
        events = []
        try:
            while (event := await read_event(reader, CASE_BOUND_S)) is not None and event["type"] != "pong":
                events.append(event)
        except TimeoutError:
            event = {"type": f"silence for {CASE_BOUND_S:.0f} s"}
        watch.count("held_audio", len(chunks) + 2)
        codes = [e["data"].get("code") for e in events if e["type"] == "error"]
        if event is None or event["type"] != "pong" or codes not in ([], ["overloaded"]):
            failures.append(f"held_audio: stream {index}: {events}, then {event}")
        elif codes and "WYOMING_MAX_BUFFERED_MB" not in events[0]["data"]["text"]:
            failures.append(f"held_audio: stream {index} refused without naming the limit: {events}")
        elif not codes:
            held.append(sum(stored_bytes(size, 1_000, 1, 1, STT_RATE) for size in chunks))

    try:
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        for writer in writers:
            writer.close()
    if sum(held) > limit:
        failures.append(
            f"held_audio: {len(held)} streams hold {sum(held)} bytes together, over the budget's {limit}"
        )
    if len(held) == streams:
        failures.append(
            f"held_audio: all {streams} streams were held ({sum(held)} bytes): the budget never refused"
        )
    return failures


# --- the stage -----------------------------------------------------------------------------------


def test_a_peer_idle_inside_a_text_stream_is_closed(sockets_server: LiveServer) -> None:
    """synthesize-start, a few words, then nothing: the server is waiting for the client, not the
    client for the server, so the connection is closed after WYOMING_IDLE_TIMEOUT_S as an idle
    one (else a client holds its slots for ever with one event each)."""
    steps: list[bytes | float] = [header("synthesize-start"), header("synthesize-chunk", {"text": "Hello"})]
    case = idle(Case("idle_in_text_stream", steps))
    outcome = asyncio.run(run_case(sockets_server.wyoming_port, case, "127.0.252.1"))
    assert problem(case, outcome) is None, f"{problem(case, outcome)} (WYOMING_IDLE_TIMEOUT_S={IDLE_S:g})"


def test_wyoming_port_under_hostile_peers(sockets_server: LiveServer) -> None:
    rng = rng_for("wyoming")
    port = sockets_server.wyoming_port
    # The stage's paths once before its memory is measured: what they allocate at first use (a
    # resampler per rate, the models' buffers at each length) is the server's working set.
    warm_up = [*(valid_request(rng) for _ in range(10)), streamed_text(rng), long_audio_without_stop(rng)]
    asyncio.run(run_all(Watch("warm-up", sockets_server), port, warm_up))
    with watched(sockets_server, "wyoming") as watch:
        failures = asyncio.run(run_all(watch, port, draw_cases(rng, CASES)))
        failures += asyncio.run(idle_sockets(watch, port, IDLE_SOCKETS))
        for _ in range(HELD_AUDIO_ROUNDS):
            failures += asyncio.run(held_audio(watch, port, rng, HELD_AUDIO_STREAMS))
    assert not failures, wrong_answers("Wyoming connections", failures)


def test_the_log_check_finds_errors_and_tracebacks(tmp_path: Path) -> None:
    """`live.server_errors`, which every stage's verdict reads, finds what a failure logs: an error
    record (the generic handlers log there), and a traceback printed outside the logging."""
    log = tmp_path / "server.log"
    log.write_text(
        '{"level": "warning", "message": "wyoming client refused"}\n'
        '{"level": "error", "logger": "backend.app.api.protocols.wyoming.connection", '
        '"message": "wyoming connection failed", "exc": "RuntimeError: boom"}\n'
        "Traceback (most recent call last):\n"
        '{"level": "info", "message": "GET /health 200"}\n'
    )
    server = LiveServer(process=None, http="", wyoming_port=0, log=log)  # type: ignore[arg-type]
    found = server_errors(server)
    assert len(found) == 2 and "RuntimeError: boom" in found[0] and found[1].startswith("Traceback")
    assert server_errors(server, offset=log.stat().st_size) == []
