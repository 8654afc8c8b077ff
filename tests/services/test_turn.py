"""The one turn (`ConversationService.reply_to`) every transport takes, on the real models: what it
stores and yields, spoken or in text only, and the places it holds at the turn gate."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import pytest

from backend.app.container import Services
from backend.app.core.errors import OverloadedError
from backend.app.core.values import ChatMessage
from backend.app.services.chat import ChatService
from backend.app.services.conversation import ConversationService
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import OutputStore
from backend.app.services.speech import ReplyAudio, ReplyText
from backend.app.services.turn_events import Heard, ReplyRequest, Turn, TurnEvent
from backend.app.storage.conversations import ConversationStore


async def _all(
    conversation: ConversationService, words: str | None, request: ReplyRequest
) -> list[TurnEvent]:
    events = await conversation.reply_to(words, request)
    async with aclosing(events) as stream:
        return [event async for event in stream]


def test_a_spoken_turn_sends_the_users_words_once(services: Services, tmp_path: Path) -> None:
    """A spoken turn stores the user's words before the reply is generated; the prompt the model
    gets still holds them once, after the earlier turns."""
    base = services.chat
    outputs = OutputStore(tmp_path / "outputs", ttl_hours=1, max_mb=10)
    history = ConversationHistory(ConversationStore(tmp_path / "c.db"), outputs, services.tts.voices)
    chat = ChatService(base.backend, base.worker, base.settings, history, max_chars=base.max_chars)
    conversation = ConversationService(services.stt, chat, services.tts, history)
    seen: list[list[ChatMessage]] = []
    original = chat.build_messages

    def recorded(
        conversation_id: str, text: str, system_prompt: str | None = None, language: str | None = None
    ) -> list[ChatMessage]:
        messages = original(conversation_id, text, system_prompt, language)
        seen.append(messages)
        return messages

    chat.build_messages = recorded  # type: ignore[method-assign]

    async def two_turns() -> list[Turn]:
        done = []
        for text in ("My name is Ada.", "What is my name?"):
            events = await _all(conversation, text, ReplyRequest("spoken", "en", asked=0.0))
            done += [event for event in events if isinstance(event, Turn)]
        return done

    turns = asyncio.run(two_turns())
    assert len(turns) == 2 and len(seen) == 2
    assert [(m.role, m.content) for m in seen[0][1:]] == [("user", "My name is Ada.")]
    assert [(m.role, m.content) for m in seen[1][1:]] == [
        ("user", "My name is Ada."),
        ("assistant", turns[0].reply),
        ("user", "What is my name?"),
    ]
    assert [t.role for t in history.store.turns("spoken")] == ["user", "assistant"] * 2


def test_a_spoken_reply_comes_as_heard_text_audio_then_the_turn_and_is_stored_with_its_audio(
    services: Services,
) -> None:
    conversation = services.conversation
    events = asyncio.run(_all(conversation, "What colour is the sky?", ReplyRequest("turn-spoken", "en")))
    assert isinstance(events[0], Heard) and events[0].text == "What colour is the sky?"
    assert isinstance(events[-1], Turn)
    audio = [e for e in events if isinstance(e, ReplyAudio)]
    text = "".join(e.text for e in events if isinstance(e, ReplyText))
    turn = events[-1]
    assert audio and sum(piece.audio.duration for piece in audio) > 0.3
    assert turn.reply and turn.reply == text.strip() and not turn.interrupted
    assert turn.audio_name and services.history.outputs.path(turn.audio_name).stat().st_size > 1000
    assert turn.timings["first_audio_ms"] > 0 and turn.timings["llm_ms"] > 0
    stored = services.history.store.turns("turn-spoken")
    assert [(t.role, t.text) for t in stored] == [
        ("user", "What colour is the sky?"),
        ("assistant", turn.reply),
    ]
    assert stored[1].audio_file == turn.audio_name


def test_a_reply_in_text_only_has_no_audio_and_stores_none(services: Services) -> None:
    """Wyoming's conversation agent takes this path: the words in, the reply's text out."""
    request = ReplyRequest("turn-text", speak=False)
    events = asyncio.run(_all(services.conversation, "Name a fruit.", request))
    assert not [e for e in events if isinstance(e, ReplyAudio)]
    turn = events[-1]
    assert isinstance(turn, Turn) and turn.reply and turn.audio_name is None
    stored = services.history.store.turns("turn-text")
    assert [t.role for t in stored] == ["user", "assistant"] and stored[1].audio_file is None


def test_a_reply_to_the_stored_conversation_stores_no_user_turn(services: Services) -> None:
    async def run() -> list[TurnEvent]:
        await services.conversation.add_user_turn("turn-stored", "Say hello.")
        return await _all(services.conversation, None, ReplyRequest("turn-stored", speak=False))

    events = asyncio.run(run())
    assert not [e for e in events if isinstance(e, Heard)] and isinstance(events[-1], Turn)
    assert [t.role for t in services.history.store.turns("turn-stored")] == ["user", "assistant"]


def test_a_full_turn_gate_refuses_before_anything_is_sent_and_a_closed_reply_frees_its_place(
    services: Services,
) -> None:
    conversation = services.conversation

    async def run() -> None:
        held = [conversation.check_ready(None) for _ in range(conversation.turns.capacity)]
        try:
            with pytest.raises(OverloadedError):
                await conversation.reply_to("Hello.", ReplyRequest("turn-full", speak=False))
        finally:
            for slot in held:
                slot.release()
        assert conversation.turns.inside == 0
        events = await conversation.reply_to("Tell me a story.", ReplyRequest("turn-closed", speak=False))
        async with aclosing(events) as stream:
            async for event in stream:
                if isinstance(event, ReplyText):
                    break  # the listener goes away mid-reply
        assert conversation.turns.inside == 0
        stored = services.history.store.turns("turn-closed")
        assert [t.role for t in stored] == ["user", "assistant"] and stored[1].interrupted

    asyncio.run(run())
