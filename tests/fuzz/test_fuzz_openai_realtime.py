"""Fuzzing /v1/realtime (OpenAI's Realtime protocol) of a live server with hostile clients drawn from a
seeded RNG (openai_events.py): invalid base64, oversized events, binary frames, huge numbers
(5,001-digit integers), JSON nested 1,200-5,000 deep, lone surrogates, unknown event types and
unknown ids (responses, items), wrong fields; each is answered with an `error` event naming the
client's event, and the connection goes on, as OpenAI's does (checked by a final
`input_audio_buffer.clear`, whose `cleared` must come after those errors). Then several
`response.create` after one user item (each ends with `response.done` or an error), a flood of
conversation.item.create sent while reading, as the server's back-pressure asks (every item is
stored, then a response is made on them), more sessions than the server holds at once, and
conversation ids in the URL that are not ones.

No answer is ever `internal_error`, and none is silence (CASE_BOUND_S). Around the stage
`live.watched` checks /health, the server's memory and its log. `make fuzz` sends ten times as many.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from typing import Any
from urllib.parse import quote

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.fuzz.live import (
    CASE_BOUND_S,
    SCALE,
    WS_MAX_SESSIONS,
    LiveServer,
    Watch,
    rng_for,
    watched,
    wrong_answers,
)
from tests.fuzz.openai_events import OPENAI_CLASSES, Sent, openai_event, user_item
from tests.fuzz.test_fuzz_realtime import BUSY, CONCURRENCY, converse

CASES = 60 * SCALE
"""Connections of the mix, each sending 1-6 events and the final clear."""
RESPONSE_SESSIONS = 3 * SCALE
FLOOD_ITEMS = 1_000 * SCALE
"""Typed items in one session (10,000 in `make fuzz`): more than the 16 the server lets wait to be
stored, so the client must keep reading while it sends."""


async def opened(ws: Any) -> None:
    """Read session.created and conversation.created."""
    for wanted in ("session.created", "conversation.created"):
        event = json.loads(await asyncio.wait_for(ws.recv(), CASE_BOUND_S))
        assert event["type"] == wanted, event


def openai_problem(sent: list[Sent], events: list[dict[str, Any]]) -> str | None:
    """Every event that must be refused has its error, no other error but `overloaded`."""
    errors = [e["error"] for e in events if e["type"] == "error"]
    if any(e.get("code") == "internal_error" for e in errors):
        return f"an internal_error: {errors}"
    unmatched = list(errors)
    for item in sent:
        if item.codes is None:
            continue
        match = next(
            (
                e
                for e in unmatched
                if (item.event_id is None or e.get("event_id") == item.event_id)
                and any(code in str(e.get("code")) for code in item.codes)
            ),
            None,
        )
        if match is None:
            return f"no error with a code in {item.codes} for {item.kind} ({item.event_id}): {errors}"
        unmatched.remove(match)
    if any(e.get("code") not in BUSY for e in unmatched):
        return f"errors for valid events: {unmatched}"
    return None


async def openai_mix(server: LiveServer, sent: list[Sent]) -> list[dict[str, Any]]:
    """Send the events, then a clear; every answer up to that clear's `cleared`."""
    url = f"{server.ws}/v1/realtime?model=fuzz"
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None, open_timeout=CASE_BOUND_S) as ws:
        await opened(ws)
        for item in sent:
            await ws.send(item.message)
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "evt_sentinel"}))
        clears = 1 + sum(item.clears for item in sent)
        while clears:
            event = json.loads(await asyncio.wait_for(ws.recv(), CASE_BOUND_S))
            events.append(event)
            clears -= event["type"] == "input_audio_buffer.cleared"
    return events


async def run_openai(watch: Watch, server: LiveServer, mixes: list[list[Sent]]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[str] = []

    async def one(sent: list[Sent]) -> None:
        async with gate:
            watch.count("openai_mix", len(sent) + 1)
            watch.saw(item.kind for item in sent)
            try:
                events = await openai_mix(server, sent)
            except TimeoutError:
                failures.append(
                    f"openai_mix: silence for {CASE_BOUND_S:.0f} s after {[s.message[:80] for s in sent]}"
                )
                return
            except InvalidHandshake as e:
                failures.append(f"openai_mix: the handshake failed ({e})")
                return
            except ConnectionClosed as e:
                failures.append(f"openai_mix: closed ({e}) after {[s.message[:80] for s in sent]}")
                return
            found = openai_problem(sent, events)
            if found:
                failures.append(f"openai_mix: {found}\n  sent {[s.message[:100] for s in sent]}")

    await asyncio.gather(*(one(sent) for sent in mixes))
    return failures


@dataclasses.dataclass
class Tally:
    """How the response.create (and the response.cancel) of one session were answered."""

    asks: int
    cancel_after: int | None = None
    created: int = 0
    refused: int = 0
    done: int = 0
    cancel_answered: bool = True
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def answered(self) -> bool:
        everyone = self.created + self.refused >= self.asks and self.done >= self.created
        return everyone and self.cancel_answered

    def read(self, event: dict[str, Any]) -> None:
        if event["type"] == "response.created":
            self.created += 1
        elif event["type"] == "response.done":
            self.done += 1
            status = event["response"]["status"]
            self.cancel_answered = self.cancel_answered or status == "cancelled"
            if status not in ("completed", "cancelled"):
                self.problems.append(f"a response ended {status}: {event['response'].get('status_details')}")
        elif event["type"] == "error" and event["error"]["code"] != "idle_timeout":  # then closed
            error = event["error"]
            if error["event_id"] == "cancel" and error["code"] == "response_cancel_not_active":
                self.cancel_answered = True
            elif error["code"] == "conversation_already_has_active_response" and str(
                error["event_id"]
            ).startswith("ask_"):
                self.refused += 1
            else:
                self.problems.append(f"an unexpected error: {error}")

    def silence(self, how: str) -> str:
        """The problem when the answers stopped coming before every request had one."""
        cancel = "" if self.cancel_after is None else f", a response.cancel after ask_{self.cancel_after}"
        unanswered = self.asks - self.created - self.refused
        return (
            f"{self.asks} response.create after one user item{cancel}: {self.created} response.created, "
            f"{self.refused} refused, {self.done} response.done; then {how}: {unanswered} "
            f"response.create never answered (no response.done, no error)"
            + ("" if self.cancel_answered else "; the response.cancel was never answered either")
        )


async def ask_responses(ws: Any, tally: Tally, modalities: list[str]) -> None:
    """One user item, then the response.create (and the cancel) `tally` counts, read until each
    is answered; what was not answered is a problem in `tally`."""
    await ws.send(
        json.dumps(
            {"type": "session.update", "session": {"type": "realtime", "output_modalities": modalities}}
        )
    )
    await ws.send(json.dumps({"type": "conversation.item.create", "item": user_item("Name a fruit.")}))
    for index in range(tally.asks):
        await ws.send(json.dumps({"type": "response.create", "event_id": f"ask_{index}"}))
        if index == tally.cancel_after:
            await ws.send(json.dumps({"type": "response.cancel", "event_id": "cancel"}))
            tally.cancel_answered = False
    try:
        while not tally.answered:
            tally.read(json.loads(await asyncio.wait_for(ws.recv(), CASE_BOUND_S)))
    except ConnectionClosed as e:  # the server closes a session idle for WS_IDLE_TIMEOUT_S
        reason = f"{e.rcvd.code} {e.rcvd.reason!r}" if e.rcvd else "no close frame"
        tally.problems.append(tally.silence(f"the server closed the connection ({reason})"))
    except TimeoutError:
        tally.problems.append(tally.silence(f"nothing for {CASE_BOUND_S:.0f} s"))
    if tally.created < 1 and not tally.problems:
        tally.problems.append(f"{tally.asks} response.create and no response")


async def responses(watch: Watch, server: LiveServer, rng: random.Random) -> list[str]:
    """One user item, then several response.create at once, now and then a response.cancel among
    them: each response.create gets a response that ends (`response.done`) or an error, and the
    cancel cuts a response or is refused."""
    asks = rng.randint(2, 6)
    tally = Tally(asks, rng.randrange(asks) if rng.random() < 0.5 else None)
    async with websockets.connect(f"{server.ws}/v1/realtime?model=fuzz", max_size=None) as ws:
        await opened(ws)
        await ask_responses(ws, tally, rng.choice([["text"], ["audio"]]))
    watch.count("responses", asks + 2 + (tally.cancel_after is not None))
    return [f"responses: {problem}" for problem in tally.problems]


async def item_flood(watch: Watch, server: LiveServer, count: int) -> list[str]:
    """`count` typed items sent as fast as the server takes them, while reading: every item is
    stored (conversation.item.done with its id) or refused with an error naming it; then a
    response is made on what was stored."""
    url = f"{server.ws}/v1/realtime?model=fuzz"
    async with websockets.connect(url, max_size=None, open_timeout=CASE_BOUND_S) as ws:
        await opened(ws)
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
            )
        )
        stored: set[str] = set()
        refused: list[dict[str, Any]] = []
        answered = asyncio.Event()
        response: dict[str, Any] = {}

        async def read() -> None:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), CASE_BOUND_S))
                if event["type"] == "conversation.item.done" and event["item"].get("role") == "user":
                    stored.add(event["item"]["id"])
                elif event["type"] == "error":
                    refused.append(event["error"])
                elif event["type"] == "response.done":
                    response.update(event["response"])
                    return
                if len(stored) + len(refused) >= count:
                    answered.set()

        reader = asyncio.create_task(read())
        try:
            for index in range(count):
                item = user_item(f"Item number {index}, a line of a long list.", f"item_fuzz_{index:06d}")
                await ws.send(
                    json.dumps({"type": "conversation.item.create", "event_id": f"evt_{index}", "item": item})
                )
            await asyncio.wait_for(answered.wait(), CASE_BOUND_S * 5)
            await ws.send(json.dumps({"type": "response.create"}))
            await asyncio.wait_for(reader, CASE_BOUND_S * 2)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        watch.count("item_flood", count + 2)
    problems = []  # each "item_flood: ..."
    if any(e.get("code") not in BUSY for e in refused):
        problems.append(f"item_flood: items refused: {refused[:5]}")
    missing = {f"item_fuzz_{i:06d}" for i in range(count)} - stored
    if len(missing) != len(refused):
        problems.append(
            f"item_flood: {len(missing)} items neither stored nor refused ({sorted(missing)[:5]} ...)"
        )
    if response.get("status") != "completed":
        problems.append(f"item_flood: the response after the flood: {response}")
    return problems


async def too_many_sessions(watch: Watch, server: LiveServer) -> list[str]:
    """WS_MAX_SESSIONS + 2 sessions at once: the extra ones get an error event and close 1013."""
    url = f"{server.ws}/v1/realtime?model=fuzz"
    total = WS_MAX_SESSIONS + 2
    results: list[str] = []
    all_answered, release = asyncio.Event(), asyncio.Event()

    async def one() -> None:
        try:
            async with websockets.connect(url, max_size=None, open_timeout=CASE_BOUND_S) as ws:
                event = json.loads(await asyncio.wait_for(ws.recv(), CASE_BOUND_S))
                if event["type"] != "error":
                    results.append(event["type"])
                    if len(results) == total:
                        all_answered.set()
                    await release.wait()  # held until every session is answered
                    return
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), CASE_BOUND_S)
                results.append(f"{event['error']['code']}/{ws.close_code}")
        finally:
            if len(results) == total:
                all_answered.set()

    tasks = [asyncio.create_task(one()) for _ in range(total)]
    try:
        await asyncio.wait_for(all_answered.wait(), CASE_BOUND_S)
    finally:
        release.set()
        await asyncio.gather(*tasks)
    watch.count("too_many_sessions", total)
    refused = [r for r in results if r != "session.created"]
    if (
        len(results) - len(refused) > WS_MAX_SESSIONS
        or not refused
        or any(not r.endswith("/1013") for r in refused)
    ):
        return [f"too_many_sessions: {total} sessions at once: {results}"]
    return []


async def bad_queries(watch: Watch, server: LiveServer) -> list[str]:
    """A conversation id in the URL that is not one: an error event, then close 1008."""
    problems = []
    for bad in ("../etc/passwd", "a" * 500, "\x00", "x y", "\ud800"):
        query = quote(bad.encode("utf-8", "surrogatepass"), safe="")
        url = f"{server.ws}/v1/realtime?model=fuzz&conversation_id={query}"
        heard = await converse(url, [])
        watch.count("bad_query", 1)
        codes = [e["error"]["code"] for e in heard.events if e["type"] == "error"]
        if heard.close != 1008 or codes != ["invalid_value"]:
            problems.append(f"bad_query: conversation_id={bad[:20]!r}: {heard.events}, close {heard.close}")
    return problems


def test_a_response_cancelled_before_it_begins_is_answered(sockets_server: LiveServer) -> None:
    """response.create then response.cancel at once, after a user item: the response (which waits
    for the item to be stored) must still be told, with response.done (cancelled) or an error, and
    the cancel must be answered; a response.create after it gets its own response."""

    async def run() -> Tally:
        tally = Tally(asks=2, cancel_after=0)
        async with websockets.connect(f"{sockets_server.ws}/v1/realtime?model=fuzz", max_size=None) as ws:
            await opened(ws)
            await ask_responses(ws, tally, ["text"])
        return tally

    tally = asyncio.run(run())
    assert not tally.problems, tally.problems


def test_openai_realtime_socket_under_hostile_clients(sockets_server: LiveServer) -> None:
    rng = rng_for("openai-realtime")
    mixes = [[openai_event(rng, i, kind)] for i, kind in enumerate(OPENAI_CLASSES)]  # each class once
    mixes += [
        [openai_event(rng, i * 10 + j) for j in range(rng.randint(1, 6))] for i in range(len(mixes), CASES)
    ]
    warm = [[openai_event(rng, 10**6 + i)] for i in range(4)]
    asyncio.run(run_openai(Watch("warm-up", sockets_server), sockets_server, warm))
    asyncio.run(item_flood(Watch("warm-up", sockets_server), sockets_server, 50))
    with watched(sockets_server, "openai_realtime") as watch:

        async def stage() -> list[str]:
            failures = await run_openai(watch, sockets_server, mixes)
            for _ in range(RESPONSE_SESSIONS):
                failures += await responses(watch, sockets_server, rng)
            failures += await item_flood(watch, sockets_server, FLOOD_ITEMS)
            failures += await too_many_sessions(watch, sockets_server)
            failures += await bad_queries(watch, sockets_server)
            return failures

        failures = asyncio.run(stage())
    assert not failures, wrong_answers("/v1/realtime sessions", failures)
