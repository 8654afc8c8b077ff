"""/v1/realtime under clients that push it: responses asked for one after another and all at once,
a response whose generation fails, floods of items, and huge numbers. Every request is answered
(a response, or an `error` naming why not), every response ends with `response.done`, and what a
session held is given back when it closes. Through the official SDK against uvicorn, real models."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from backend.app.container import Services
from backend.app.core.memory import trim_heap
from tests.api.test_openai_realtime import Events, Server, _serve, sdk
from tests.server import rss_kib

TEXT_ONLY = {"type": "realtime", "output_modalities": ["text"]}


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(services, tmp_path_factory.mktemp("rt-abuse"), chat_tokens=8)


async def _text_session(connection: Any) -> Events:
    """The connection's events, once its session answers in text (quicker than speech)."""
    events = Events(connection)
    await events.of("session.created")
    await connection.session.update(session=TEXT_ONLY)
    await events.of("session.updated")
    return events


async def _user_item(connection: Any, text: str) -> None:
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )


def test_responses_asked_one_after_another_each_end(server: Server) -> None:
    """One user item, then response.create three times, each after the last response.done: the
    third found two assistant turns at the end of the conversation, which llama.cpp's template
    refused, and the response never ended."""

    async def run() -> list[dict[str, Any]]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = await _text_session(connection)
            await _user_item(connection, "Name a fruit.")
            done = []
            for _ in range(3):
                await connection.response.create()
                done.append(await events.of("response.done", within=120))
            return done

    for response in asyncio.run(run()):
        assert response["response"]["status"] == "completed", response
        assert response["response"]["output"][0]["content"][0]["text"]


def test_every_response_create_is_answered(server: Server) -> None:
    """Eleven response.create at once: each gets a response (created ... done) or an error that
    says a response is already in progress; none is dropped without a word."""

    async def run() -> tuple[int, int]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = await _text_session(connection)
            await _user_item(connection, "Say hello.")
            for index in range(11):
                await connection.response.create(event_id=f"ask_{index}")
            created = refused = done = 0
            while created + refused < 11 or done < created:
                event = (
                    await events.until(
                        lambda e: e["type"] in ("response.created", "response.done", "error"), 120
                    )
                )[-1]
                if event["type"] == "response.created":
                    created += 1
                elif event["type"] == "response.done":
                    done += 1
                    assert event["response"]["status"] == "completed"
                else:
                    assert event["error"]["code"] == "conversation_already_has_active_response", event
                    assert event["error"]["event_id"].startswith("ask_")
                    refused += 1
            return created, refused

    created, refused = asyncio.run(run())
    assert created >= 1 and created + refused == 11


def test_a_response_that_fails_ends_with_an_error_and_a_failed_done(server: Server) -> None:
    backend = server.services.chat.backend
    original = backend.chat_stream

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the engine broke")
        yield  # pragma: no cover - a generator, as the real one is

    async def run() -> list[dict[str, Any]]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = await _text_session(connection)
            await _user_item(connection, "Hello?")
            await events.of("conversation.item.done")
            backend.chat_stream = broken  # a rare failure, forced: the engine raising mid-reply
            try:
                await connection.response.create()
                got = await events.until(lambda e: e["type"] == "response.done", 60)
            finally:
                backend.chat_stream = original
            # The session goes on: the next response is made.
            await connection.response.create()
            got.append(await events.of("response.done", within=120))
            return got

    got = asyncio.run(run())
    kinds = [e["type"] for e in got]
    assert "error" in kinds and kinds.index("error") < kinds.index("response.done")
    failed = got[kinds.index("response.done")]["response"]
    assert failed["status"] == "failed" and failed["status_details"]["error"]["code"] == "internal_error"
    assert got[-1]["response"]["status"] == "completed"


def test_huge_numbers_are_an_error_event_and_the_session_goes_on(server: Server) -> None:
    async def run() -> list[dict[str, Any]]:
        url = server.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url) as ws:
            await ws.recv()  # session.created
            await ws.recv()  # conversation.created
            answers = []
            for raw in (
                '{"type": "session.update", "session": {"max_output_tokens": ' + "9" * 5_001 + "}}",
                '{"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": ' + "1" * 6_000 + "}",
                '{"type": "response.create", "event_id": ' + "7" * 5_001 + "}",
                '{"type": "input_audio_buffer.clear"}',
            ):
                await ws.send(raw)
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return answers

    answers = asyncio.run(run())
    assert [a["type"] for a in answers] == ["error", "error", "error", "input_audio_buffer.cleared"]
    assert all("digits" in a["error"]["message"] for a in answers[:3])


def _flood(server: Server, items: int) -> None:
    async def run() -> None:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = await _text_session(connection)
            for index in range(items):
                await _user_item(connection, f"Item number {index}, a line of a long list.")
            await connection.response.create()
            await events.of("response.done", within=300)

    asyncio.run(run())


def test_a_flood_of_items_is_stored_and_its_memory_given_back(server: Server) -> None:
    """Sessions of thousands of items, then a response: every item is stored, the response is
    made on what fits the context, and once the sessions close the process is back within 10 % of
    its level after the first (the issue saw 562 -> 941 MB, kept)."""
    _flood(server, 500)  # warm-up: the first session's allocations are the server's working set
    gc.collect()
    trim_heap()
    before = rss_kib(os.getpid())
    for _ in range(2):
        _flood(server, 3_000)
    gc.collect()
    trim_heap()
    after = rss_kib(os.getpid())
    assert after <= before * 1.10, (before, after)


def test_session_instructions_are_kept_with_the_stored_conversation(server: Server) -> None:
    """The conversation, read back or continued over another route later, has the instructions the
    realtime session gave; a later session.update replaces them."""
    store = server.services.history.store

    def stored(conversation_id: str) -> str | None:
        conversation = store.get(conversation_id)
        return conversation.system_prompt if conversation else None

    async def run() -> tuple[str, str | None, str | None]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await events.of("session.created")
            conversation_id = (await events.of("conversation.created"))["conversation"]["id"]
            await connection.session.update(session={**TEXT_ONLY, "instructions": "Answer like a pirate."})
            await events.of("session.updated")
            await _user_item(connection, "Hello.")
            await events.of("conversation.item.done")
            first = stored(conversation_id)
            await connection.session.update(session={**TEXT_ONLY, "instructions": "Answer like a poet."})
            await events.of("session.updated")
            await connection.response.create()
            await events.of("response.done", within=120)
            return conversation_id, first, stored(conversation_id)

    _, first, later = asyncio.run(run())
    assert first == "Answer like a pirate."
    assert later == "Answer like a poet."
