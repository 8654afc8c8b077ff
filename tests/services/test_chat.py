"""The chat service on the real embedded LLM: stored history, the token budget, serialisation."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from backend.app.container import Services
from backend.app.core.errors import AppError, ContextLengthError, InvalidInputError
from backend.app.core.values import ChatMessage, GenerationOptions
from backend.app.services.chat import ChatDelta, ChatService
from backend.app.services.completion import Completion
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import OutputStore
from backend.app.storage.conversations import ConversationStore
from backend.app.storage.rows import Turn
from backend.app.text.stops import StopScanner


@pytest.fixture
def chat(services: Services, tmp_path: Path) -> ChatService:
    """The shared model and worker over a store of this test's own."""
    base = services.chat
    outputs = OutputStore(tmp_path / "outputs", ttl_hours=1, max_mb=10)
    history = ConversationHistory(ConversationStore(tmp_path / "c.db"), outputs, services.tts.voices)
    return ChatService(base.backend, base.worker, base.settings, history, max_chars=base.max_chars)


def test_history_reaches_the_model_and_changes_the_reply(chat: ChatService) -> None:
    question = "What did I just tell you?"

    async def scenario() -> tuple[str, str, str]:
        first = await chat.reply("My favourite animal is the giraffe. Remember that.")
        followup = await chat.reply(question, first.conversation_id)
        fresh = await chat.reply(question)
        return first.conversation_id, followup.reply, fresh.reply

    conversation_id, followup, fresh = asyncio.run(scenario())
    turns = chat.history.store.turns(conversation_id)
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert "giraffe" in turns[0].text and turns[1].timings["llm_ms"] > 0
    # Greedy decoding: the same question gives the same reply unless the history differs.
    assert followup != fresh


def test_prompt_holds_system_history_and_new_message(chat: ChatService) -> None:
    chat.history.store.add_turns("abc", [Turn("user", "hi"), Turn("assistant", "hello")])
    messages = chat.build_messages("abc", "next")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content == chat.settings.system_prompt
    chat.history.store.update("abc", system_prompt="Speak like a pirate.")
    assert chat.build_messages("abc", "next")[0].content == "Speak like a pirate."


def test_the_user_s_language_is_asked_for_in_the_reply(chat: ChatService) -> None:
    """A turn heard in another language than English asks the model to answer in it."""
    plain = chat.build_messages("lang", "hi")[0].content
    assert chat.build_messages("lang", "hi", language="en")[0].content == plain
    chinese = chat.build_messages("lang", "你好", language="zh")[0].content
    assert chinese.startswith(plain) and chinese.endswith("The user speaks Chinese: answer in Chinese.")
    own = chat.build_messages("lang", "hola", "Be brief.", language="es")[0].content
    assert own == "Be brief.\n\nThe user speaks Spanish: answer in Spanish."
    # Typed text carries no language; its script gives it away when only one language writes it.
    assert chat.build_messages("lang", "北京是哪個國家的首都？")[0].content == chinese
    assert chat.build_messages("lang", "We flew to 北京.")[0].content == plain


def test_context_keeps_the_newest_turns_that_fit_the_token_budget(chat: ChatService) -> None:
    filler = "This sentence is here to take up room in the context window. " * 6
    chat.history.store.add_turns(
        "long", [Turn(role, f"{role} {i}: {filler}") for i in range(20) for role in ("user", "assistant")]
    )
    messages = chat.build_messages("long", "now")
    budget = chat.settings.context_tokens - chat.settings.max_tokens
    assert chat.backend.count_tokens(messages) <= budget
    kept = messages[1:-1]
    assert 0 < len(kept) < 40
    assert kept[0].role == "user" and kept[-1].content.startswith("assistant 19:")  # newest kept
    # The next older exchange would not have fitted.
    older = chat.history.store.turns("long")[-len(kept) - 2 :][:2]
    grown = [messages[0], *[ChatMessage(t.role, t.text) for t in older], *messages[1:]]  # type: ignore[arg-type]
    assert chat.backend.count_tokens(grown) > budget


def test_a_message_that_cannot_fit_is_refused(chat: ChatService) -> None:
    with pytest.raises(InvalidInputError, match="context"):
        chat.build_messages("x", "word " * 4000)


def test_parallel_requests_on_one_conversation_are_serialised(chat: ChatService) -> None:
    async def scenario() -> None:
        await asyncio.gather(*(chat.reply(f"Say the number {i}.", "same") for i in range(3)))

    asyncio.run(scenario())
    turns = chat.history.store.turns("same")
    assert [t.role for t in turns] == ["user", "assistant"] * 3  # never interleaved
    assert sorted(t.text for t in turns if t.role == "user") == [f"Say the number {i}." for i in range(3)]


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "../../etc", "é", "abc\n", "abc\r\n"])
def test_bad_conversation_ids_are_refused(chat: ChatService, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        asyncio.run(chat.reply("hello", bad))


@pytest.mark.parametrize(("text", "status"), [("", 422), ("   ", 422), ("x" * 5001, 413)])
def test_empty_or_oversize_text_is_refused(chat: ChatService, text: str, status: int) -> None:
    with pytest.raises(AppError) as refused:
        asyncio.run(chat.reply(text))
    assert refused.value.status_code == status


def test_locks_are_dropped_after_use(chat: ChatService) -> None:
    asyncio.run(chat.reply("Hello.", "tidy"))
    assert chat.history._locks == {}


def test_a_stream_stopped_early_stores_what_was_delivered(chat: ChatService) -> None:
    async def scenario() -> list[str]:
        delivered: list[str] = []
        stream = await chat.open_reply("Tell me a long story about a dragon.", "cut")
        async with aclosing(stream.events) as events:
            async for event in events:
                assert isinstance(event, ChatDelta)
                delivered.append(event.text)
                if len(delivered) == 3:
                    break
        return delivered

    delivered = asyncio.run(scenario())
    user, assistant = chat.history.store.turns("cut")
    assert user.text == "Tell me a long story about a dragon." and not user.interrupted
    assert assistant.interrupted and assistant.text == "".join(delivered).strip()
    assert _idle_soon(chat)


def _idle_soon(chat: ChatService) -> bool:
    deadline = time.monotonic() + 2
    while chat.worker.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    return chat.worker.pending == 0


def test_an_interrupted_empty_reply_is_not_shown_to_the_model(chat: ChatService) -> None:
    chat.history.store.add_turns("gap", [Turn("user", "Hello?"), Turn("assistant", "", interrupted=True)])
    messages = chat.build_messages("gap", "Are you there?")
    assert [m.role for m in messages] == ["system", "user", "user"]


@pytest.mark.parametrize(
    ("deltas", "stops", "expected"),
    [
        (["Hello", " world"], [], "Hello world"),
        (["One. Two"], ["."], "One"),
        (["Hel", "lo EN", "D here"], ["END"], "Hello "),
        (["ab", "c", "d"], ["cx"], "abcd"),  # a partial match that never completes is released
        (["x<|", "im_end|>y"], ["<|im_end|>", "zz"], "x"),
    ],
)
def test_stop_scanner_cuts_across_deltas(deltas: list[str], stops: list[str], expected: str) -> None:
    scanner = StopScanner(stops)
    out = ""
    for delta in deltas:
        out += scanner.feed(delta)
        if scanner.stopped:
            break
    if not scanner.stopped:
        out += scanner.flush()
    assert out == expected


def _complete(chat: ChatService, messages: list[ChatMessage], **kwargs: object) -> tuple[str, Completion]:
    async def run() -> tuple[str, Completion]:
        deltas: list[str] = []
        max_tokens = int(kwargs.pop("max_tokens", 24))  # type: ignore[call-overload]
        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        completion = await chat.open_completion(messages, options, **kwargs)  # type: ignore[arg-type]
        async with aclosing(completion.events) as events:
            async for event in events:
                if isinstance(event, Completion):
                    return "".join(deltas), event
                deltas.append(event)
        raise AssertionError("no Completion")

    return asyncio.run(run())


QUESTION = [ChatMessage("user", "Which city is the capital of France?")]


def test_a_completion_reports_text_reason_and_usage(chat: ChatService) -> None:
    text, end = _complete(chat, QUESTION)
    assert text == end.text and "Paris" in text
    assert end.finish_reason == "stop"
    assert end.prompt_tokens == chat.backend.count_tokens(QUESTION)
    assert end.completion_tokens == chat.backend.count_text_tokens(text)
    assert chat.history.store.page(limit=10, offset=0)[1] == 0  # nothing stored


def test_a_completion_ends_at_max_tokens_or_a_stop(chat: ChatService) -> None:
    text, end = _complete(chat, QUESTION, max_tokens=3)
    assert end.finish_reason == "length" and 1 <= end.completion_tokens <= 4
    text, end = _complete(chat, QUESTION, stop=["France"])
    full, _ = _complete(chat, QUESTION)
    assert "France" in full and text == full[: full.index("France")]
    assert end.finish_reason == "stop"
    assert chat.worker.pending == 0


def test_a_completion_that_cannot_fit_is_refused_before_it_starts(chat: ChatService) -> None:
    with pytest.raises(ContextLengthError, match="maximum context length"):
        asyncio.run(chat.open_completion(QUESTION, GenerationOptions(chat.settings.context_tokens, 0.0)))
    with pytest.raises(ContextLengthError):
        asyncio.run(chat.open_completion([ChatMessage("user", "x" * 10_000_000)], GenerationOptions(1, 0.0)))
    with pytest.raises(InvalidInputError):
        asyncio.run(chat.open_completion([], GenerationOptions(1, 0.0)))


@pytest.mark.parametrize("unit", ["word ", "语"])  # spaced words, and Chinese without spaces
def test_a_long_transcript_keeps_its_newest_part_that_fits(chat: ChatService, unit: str) -> None:
    said = "".join(f"{unit}{i} " if unit == "word " else unit for i in range(6000)).strip()
    assert len(said) > chat.max_chars  # over MAX_TTS_CHARS, yet spoken, so not refused
    fitted = chat.fit_spoken(said)
    assert fitted.startswith("… ") and said.endswith(fitted[2:].strip()[-50:])
    budget = chat.settings.context_tokens - chat.settings.max_tokens
    messages = chat.build_messages("fits", fitted)
    assert chat.backend.count_tokens(messages) <= budget
    assert chat.fit_spoken("  Short enough.  ") == "Short enough."
