"""Fuzzing /ws/conversation (our realtime protocol, docs/realtime.md) of a live server with hostile
clients drawn from a seeded RNG: audio before `start`, text that is not JSON or is JSON nested
1,200-5,000 deep, unknown types, sample rates out of range or 5,001 digits long, lone surrogates,
unknown voices and bad conversation ids, `start` twice, odd and oversized frames, idle and slow
clients, clients that vanish, and valid sessions between them (some with a spoken turn, answered
and spoken back). Each connection ends with the error event and the close code docs/realtime.md
gives, or with `session_end` and 1000.

No answer is ever `internal_error`, and none is silence (CASE_BOUND_S). Around the stage
`live.watched` checks /health, the server's memory and its log. `make fuzz` sends ten times as many.
/v1/realtime has its stage in test_fuzz_openai_realtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.fuzz.hostile import nested, pcm, speech_at
from tests.fuzz.live import (
    CASE_BOUND_S,
    IDLE_S,
    SCALE,
    WS_MAX_FRAME_BYTES,
    LiveServer,
    Watch,
    rng_for,
    watched,
    wrong_answers,
)

CONCURRENCY = 6
"""Sessions at once in the mixes: fewer than WS_MAX_SESSIONS, so that none is refused for that."""
CASES = 80 * SCALE
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
BUSY = ("overloaded",)
"""Error codes a valid session may get on a busy server: asked to retry, not refused."""


def split(audio: bytes, rate: int, rng: random.Random) -> list[str | bytes | float]:
    """`audio` in frames of 20, 50 or 100 ms."""
    step = int(rate * rng.choice([0.02, 0.05, 0.1])) * 2
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def described(messages: list[Any]) -> str:
    shown = [m[:120] if isinstance(m, str | bytes) else m for m in messages[:4]]
    return f"{len(messages)} messages: {shown}"


@dataclasses.dataclass
class OwnCase:
    kind: str
    messages: list[str | bytes | float]
    """Text and binary messages, or a pause in seconds."""
    error: tuple[str, ...] | None
    """Error codes, one of which the server must send (None: a clean session, ended by `stop`)."""
    close: tuple[int, ...] = (1008,)
    leaves: bool = False
    """The client goes once it has sent, in the middle of its session, waiting for nothing."""


def start(**fields: Any) -> str:
    return json.dumps({"type": "start", **fields})


STOP = json.dumps({"type": "stop"})


OWN_CLASSES = {  # the classes of /ws/conversation connections, and how often each is drawn
    "audio_before_start": 1,
    "not_json": 2,
    "nested": 2,
    "unknown_type": 1,
    "bad_rate": 2,
    "huge_integer": 1,
    "lone_surrogate": 2,
    "bad_field": 2,
    "start_twice": 1,
    "odd_frame": 1,
    "oversized": 2,
    "interrupt_first": 1,
    "valid": 4,
    "stop_first": 1,
    "idle": 1,
    "slow": 1,
    "abandoned": 1,
}


def own_case(rng: random.Random, kind: str | None = None) -> OwnCase:
    """One connection to /ws/conversation, of a class drawn from the hostile ones (and valid)."""
    rate = rng.choice(RATES)
    kind = kind or rng.choices(list(OWN_CLASSES), list(OWN_CLASSES.values()))[0]
    if kind == "audio_before_start":
        return OwnCase(kind, [pcm(rng, 16000, 0.02)], ("protocol_error",))
    if kind == "not_json":
        text = rng.choice(["hello", "{", "[1]", "null", '"start"', '{"kind": "start"}', '{"type": 5}', " "])
        return OwnCase(kind, [text], ("protocol_error",))
    if kind == "nested":
        text = rng.choice(['{"type": "start", "voice": ', '{"type": "start", "x": ', ""]) + nested(rng)
        return OwnCase(kind, [text + ("}" if text.startswith("{") else "")], ("protocol_error",))
    if kind == "unknown_type":
        return OwnCase(
            kind,
            [json.dumps({"type": rng.choice(["", "START", "resume", "ping", "x" * 300])})],
            ("protocol_error",),
        )
    if kind == "bad_rate":
        rates: list[Any] = [0, -1, 1000, 15999, 16001, 2**31, 1.5, 16000.0, "16000", True, None, [16000], {}]
        value = rng.choice(rates)
        return OwnCase(kind, [json.dumps({"type": "start", "sample_rate": value})], ("invalid_sample_rate",))
    if kind == "huge_integer":
        field = rng.choice(["sample_rate", "voice", "n"])
        return OwnCase(kind, ['{"type": "start", "' + field + '": ' + "9" * 5_001 + "}"], ("protocol_error",))
    if kind == "lone_surrogate":
        field = rng.choice(["voice", "language", "conversation_id", "type"])
        text = rng.choice(["\ud800", "a\udfffb", "\ud83d"])
        message = {"type": "start", field: text}
        return OwnCase(kind, [json.dumps(message)], ("protocol_error",))
    if kind == "bad_field":
        fields: list[tuple[str, Any]] = [
            ("conversation_id", "../etc/passwd"),
            ("conversation_id", "a" * 1_000),
            ("conversation_id", 5),
            ("conversation_id", []),
            ("voice", "no-such-voice"),
            ("voice", 5),
            ("language", "klingon"),
            ("language", "x" * 200),
            ("language", 5),
        ]
        field, value = rng.choice(fields)
        return OwnCase(kind, [start(**{field: value})], ("protocol_error", "invalid_input", "not_found"))
    if kind == "start_twice":
        return OwnCase(kind, [start(), start(sample_rate=rate)], ("protocol_error",))
    if kind == "odd_frame":
        return OwnCase(kind, [start(), bytes(rng.randrange(1, 4_000, 2))], ("invalid_audio",))
    if kind == "oversized":
        size = rng.randint(WS_MAX_FRAME_BYTES + 1, 4 * WS_MAX_FRAME_BYTES)
        big: str | bytes = bytes(size - size % 2)
        if rng.random() < 0.5:
            big = json.dumps({"type": "start", "pad": "x" * size})
        return OwnCase(kind, [start(), big] if rng.random() < 0.5 else [big], ("frame_too_large",), (1009,))
    if kind == "interrupt_first":
        return OwnCase(kind, [json.dumps({"type": "interrupt"})], ("protocol_error",))
    if kind == "idle":
        return OwnCase(kind, [start()] if rng.random() < 0.5 else [], ("idle_timeout",), (1000,))
    if kind == "stop_first":
        return OwnCase(kind, [STOP], None, (1000,))
    if kind == "slow":  # a frame now and then, for longer than the idle time: never idle
        steps: list[str | bytes | float] = [start(sample_rate=rate)]
        for frame in split(pcm(rng, rate, 0.2), rate, rng)[:6]:
            steps += [frame, IDLE_S / 3]
        return OwnCase(kind, [*steps, STOP], None, (1000,))
    if kind == "abandoned":
        audio = speech_at(rate)[: rng.randint(2, 3 * rate) * 2] if rng.random() < 0.5 else pcm(rng, rate, 0.3)
        return OwnCase(kind, [start(sample_rate=rate), *split(audio, rate, rng)], None, (), leaves=True)
    messages: list[str | bytes | float] = [start(sample_rate=rate, language=rng.choice(["en", None]))]
    if rng.random() < 0.4:  # a spoken turn: transcribed, answered and spoken back
        messages += split(speech_at(rate) + bytes(rate * 2), rate, rng)
    else:
        messages += split(pcm(rng, rate, rng.uniform(0.1, 1.5)), rate, rng)
    if rng.random() < 0.3:
        messages.append(json.dumps({"type": "interrupt"}))
    return OwnCase("valid", [*messages, STOP], None, (1000,))


@dataclasses.dataclass
class Heard:
    events: list[dict[str, Any]]
    audio_bytes: int
    close: int | None
    """The close code the server sent (None: the connection ended without one)."""


async def converse(url: str, messages: list[Any], leave: bool = False) -> Heard:
    """Send `messages` while reading everything until the server closes (or, with `leave`, close
    once they are sent, as a client that vanishes)."""
    events: list[dict[str, Any]] = []
    audio = 0
    async with websockets.connect(url, max_size=None, open_timeout=CASE_BOUND_S) as ws:

        async def send_all() -> None:
            with contextlib.suppress(ConnectionClosed):
                for message in messages:
                    if isinstance(message, float):
                        await asyncio.sleep(message)
                    else:
                        await ws.send(message)

        sending = asyncio.create_task(send_all())
        try:
            if leave:
                await sending
                return Heard(events, audio, None)
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), CASE_BOUND_S)
                except ConnectionClosed as e:
                    return Heard(events, audio, e.rcvd.code if e.rcvd else None)
                if isinstance(message, bytes):
                    audio += len(message)
                else:
                    events.append(json.loads(message))
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)


def own_problem(case: OwnCase, heard: Heard) -> str | None:
    if case.leaves:
        return None
    errors = [e for e in heard.events if e.get("type") == "error"]
    codes = [e.get("code") for e in errors]
    if "internal_error" in codes:
        return f"an internal_error: {errors}"
    if heard.close not in case.close:
        return f"closed with {heard.close}, not {case.close}; events {heard.events[-3:]}"
    if case.error is not None:
        if not any(code in case.error for code in codes):
            return f"no error with a code in {case.error}: {heard.events[-3:]}"
        return None
    if any(code not in BUSY for code in codes):
        return f"an error in a valid session: {errors}"
    if not heard.events or heard.events[-1].get("type") != "session_end":
        return f"no session_end at the end: {heard.events[-3:]}"
    return None


async def run_own(watch: Watch, server: LiveServer, cases: list[OwnCase]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[str] = []

    async def one(case: OwnCase) -> None:
        async with gate:
            watch.count(case.kind, sum(not isinstance(m, float) for m in case.messages))
            try:
                heard = await converse(f"{server.ws}/ws/conversation", case.messages, case.leaves)
            except InvalidHandshake as e:
                failures.append(f"{case.kind}: the handshake failed ({e}), {described(case.messages)}")
                return
            except TimeoutError:
                failures.append(f"{case.kind}: silence for {CASE_BOUND_S:.0f} s, {described(case.messages)}")
                return
            found = own_problem(case, heard)
            if found:
                failures.append(f"{case.kind}: {found}\n  sent {described(case.messages)}")

    await asyncio.gather(*(one(case) for case in cases))
    return failures


def test_own_realtime_socket_under_hostile_clients(sockets_server: LiveServer) -> None:
    rng = rng_for("realtime")
    cases = [own_case(rng, kind) for kind in OWN_CLASSES]  # every class at least once
    cases += [own_case(rng) for _ in range(CASES - len(cases))]
    asyncio.run(run_own(Watch("warm-up", sockets_server), sockets_server, [own_case(rng) for _ in range(6)]))
    with watched(sockets_server, "realtime") as watch:
        failures = asyncio.run(run_own(watch, sockets_server, cases))
    assert not failures, wrong_answers("/ws/conversation sessions", failures)
