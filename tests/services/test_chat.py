"""The chat service on the real embedded LLM: history per conversation, ids, bounds."""

from __future__ import annotations

import asyncio

import pytest

from backend.app.backends.protocols import ChatMessage
from backend.app.core.errors import InvalidInputError
from backend.app.services.chat import ChatService, ConversationMemory
from backend.app.services.container import Services


def test_history_reaches_the_model_and_changes_the_reply(services: Services) -> None:
    chat = services.chat
    question = "What did I just tell you?"

    async def scenario() -> tuple[str, str, str]:
        first = await chat.reply("My favourite animal is the giraffe. Remember that.")
        followup = await chat.reply(question, first.conversation_id)
        fresh = await chat.reply(question)
        return first.conversation_id, followup.reply, fresh.reply

    conversation_id, followup, fresh = asyncio.run(scenario())
    history = chat.memory.history(conversation_id)
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert "giraffe" in history[0].content
    # Greedy decoding: the same question gives the same reply unless the history differs.
    assert followup != fresh


def test_prompt_holds_system_history_and_new_message(services: Services) -> None:
    chat = services.chat
    chat.memory.append("abc", ChatMessage("user", "hi"), ChatMessage("assistant", "hello"))
    messages = chat.build_messages("abc", " next ")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content == chat.settings.system_prompt
    assert messages[-1].content == "next"


def test_history_window_never_starts_on_an_assistant_turn(services: Services) -> None:
    chat = ChatService(services.chat.backend, services.chat.worker, services.chat.settings)
    for i in range(30):
        chat.memory.append("long", ChatMessage("user", f"q{i}"), ChatMessage("assistant", f"a{i}"))
    messages = chat.build_messages("long", "now")
    kept = messages[1:-1]
    assert len(kept) <= chat.settings.max_history_messages
    assert kept[0].role == "user" and kept[-1].content == "a29"


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "../../etc", "é"])
def test_bad_conversation_ids_are_refused(services: Services, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        asyncio.run(services.chat.reply("hello", bad))


@pytest.mark.parametrize("text", ["", "   ", "x" * 5001])
def test_empty_or_oversize_text_is_refused(services: Services, text: str) -> None:
    with pytest.raises(InvalidInputError):
        asyncio.run(services.chat.reply(text))


def test_memory_drops_the_least_recently_used_conversation() -> None:
    memory = ConversationMemory(max_conversations=2)
    memory.append("a", ChatMessage("user", "1"))
    memory.append("b", ChatMessage("user", "2"))
    memory.append("a", ChatMessage("user", "3"))
    memory.append("c", ChatMessage("user", "4"))
    assert memory.history("b") == []
    assert [m.content for m in memory.history("a")] == ["1", "3"]
