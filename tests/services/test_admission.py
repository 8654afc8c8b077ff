"""A streamed response is refused (503) before its 200 or not at all: the model slot it was
admitted with is kept for it until its work starts, so a request arriving in between is the one
refused. Runs the real embedded models, each behind a worker with room for one call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from backend.app.container import Services
from backend.app.core.errors import InvalidAudioError, OverloadedError
from backend.app.core.values import ChatMessage, GenerationOptions, TranscribeOptions
from backend.app.core.worker import ModelWorker
from backend.app.services.chat import ChatReply
from backend.app.services.conversation import collect
from backend.app.services.turn_events import Turn
from tests.conftest import clip


@pytest.fixture
def one_slot(services: Services) -> Iterator[Services]:
    """The shared services, with the chat and TTS models behind workers that admit one call."""
    saved = services.chat.worker, services.tts.worker
    services.chat.worker = ModelWorker("chat", queue_size=0)
    services.tts.worker = ModelWorker("tts", queue_size=0)
    try:
        yield services
    finally:
        for worker in (services.chat.worker, services.tts.worker):
            worker.shutdown()
        services.chat.worker, services.tts.worker = saved


def test_a_tts_stream_keeps_its_slot_until_it_is_sent(one_slot: Services) -> None:
    tts = one_slot.tts

    async def main() -> None:
        speech = await tts.speak("The first sentence. And the second one.")
        # The 200 goes out here. A request arriving now is refused, not the stream.
        with pytest.raises(OverloadedError):
            await tts.synthesize("Someone else's request.")
        got = [chunk async for chunk in speech.audio()]
        assert len(got) == speech.segments >= 1
        assert sum(chunk.duration for chunk in got) > 1.5

    asyncio.run(main())
    assert tts.worker.pending == 0


def test_a_chat_stream_keeps_its_slot_until_it_is_sent(one_slot: Services) -> None:
    chat = one_slot.chat

    async def main() -> ChatReply:
        stream = await chat.open_reply("Which city is the capital of France?", None)
        with pytest.raises(OverloadedError):
            await chat.open_completion([ChatMessage("user", "hi")], GenerationOptions(4, 0.0))
        async with aclosing(stream.events) as events:
            async for event in events:
                if isinstance(event, ChatReply):
                    return event
        raise AssertionError("no reply")

    assert "paris" in asyncio.run(main()).reply.lower()
    assert chat.worker.pending == 0


def test_a_completion_checked_up_front_runs_in_its_slot(one_slot: Services) -> None:
    chat = one_slot.chat
    messages = [ChatMessage("user", "Which city is the capital of France?")]

    async def main() -> str:
        completion = await chat.open_completion(messages, GenerationOptions(8, 0.0))
        with pytest.raises(OverloadedError):
            await chat.open_reply("hello", None)
        parts = []
        async with aclosing(completion.events) as events:
            async for event in events:
                if isinstance(event, str):
                    parts.append(event)
        return "".join(parts)

    assert "Paris" in asyncio.run(main())
    assert chat.worker.pending == 0


def test_a_turn_holds_the_llm_slot_from_its_start_to_its_reply(one_slot: Services) -> None:
    conversation = one_slot.conversation
    chat = one_slot.chat

    async def main() -> Turn:
        stream = await conversation.begin_turn(clip("speech.flac"))  # transcribed: the 200 goes now
        assert chat.worker.pending == 1
        with pytest.raises(OverloadedError):
            await chat.open_reply("A later request.", None)
        return await collect(stream)

    turn = asyncio.run(main())
    assert turn.reply and turn.timings["llm_ms"] > 0
    assert chat.worker.pending == 0 and one_slot.tts.worker.pending == 0


def test_a_turn_that_ends_early_gives_the_llm_slot_back(one_slot: Services) -> None:
    conversation = one_slot.conversation
    chat = one_slot.chat
    silence = clip("silence.wav")

    async def main() -> None:
        with pytest.raises(InvalidAudioError):
            await conversation.begin_turn(b"not audio at all")
        assert chat.worker.pending == 0
        stream = await conversation.begin_turn(silence)  # nothing said: no reply, no slot
        assert stream.transcription.text == "" and chat.worker.pending == 0
        await collect(stream)
        stream = await conversation.begin_turn(clip("speech.flac"))
        del stream  # the client went away before the reply was sent
        assert chat.worker.pending == 0

    asyncio.run(main())


def test_a_turn_is_not_starved_by_single_stage_requests(services: Services) -> None:
    """Single /stt requests keep the STT queue full; a turn, admitted as a whole at the turn gate,
    reserves its transcription instead of being refused for a full STT queue."""
    stt = services.stt
    saved = stt.worker
    stt.worker = ModelWorker("stt", queue_size=0)
    release = threading.Event()
    try:

        async def main() -> Turn:
            hog = asyncio.ensure_future(stt.worker.run(release.wait, 30))  # the STT is busy
            await asyncio.sleep(0.05)
            with pytest.raises(OverloadedError):  # a single-stage request is refused
                await stt.transcribe(clip("speech.flac"), TranscribeOptions())
            turn = asyncio.ensure_future(services.conversation.turn(clip("speech.flac")))
            await asyncio.sleep(0.3)
            assert not turn.done()  # waiting for the STT, not refused
            release.set()
            await hog
            return await turn

        turn = asyncio.run(main())
        assert turn.transcript and turn.reply
    finally:
        release.set()
        stt.worker.shutdown()
        stt.worker = saved


def test_turns_beyond_the_gate_are_refused_and_the_place_comes_back(services: Services) -> None:
    conversation = services.conversation
    held = [conversation.check_ready(None) for _ in range(conversation.turns.capacity)]
    try:
        with pytest.raises(OverloadedError, match="spoken turns"):
            asyncio.run(conversation.begin_turn(clip("speech.flac")))
    finally:
        for slot in held:
            slot.release()
    assert conversation.turns.inside == 0 and services.chat.worker.pending == 0
    stream = asyncio.run(conversation.begin_turn(clip("silence.wav")))
    asyncio.run(collect(stream))
    assert conversation.turns.inside == 0


def test_a_flood_on_one_conversation_is_bounded(services: Services) -> None:
    """Requests waiting on one conversation's lock count: past CONVERSATION_QUEUE_SIZE + 1 they get a 503."""
    chat = services.chat
    history = services.history
    limit = history.max_per_conversation

    async def main() -> list[object]:
        gate = asyncio.Event()

        async def hold() -> None:
            async with history.serialised("flooded"):
                await gate.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(limit)]
        await asyncio.sleep(0.05)
        results: list[object] = []
        for attempt in (chat.open_reply("hello", "flooded"), chat.reply("hello", "flooded")):
            try:
                results.append(await attempt)
            except OverloadedError as e:
                results.append(e)
        await (await chat.open_reply("hello", "another")).aclose()  # other conversations go on
        gate.set()
        await asyncio.gather(*holders)
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, OverloadedError) and r.headers["Retry-After"] for r in results), results
    assert chat.worker.pending == 0
    assert asyncio.run(chat.reply("Say hi.", "flooded")).reply
