"""The chat service: persisted conversations, a token-budgeted context, and replies.

Requests on one conversation are serialised (history read, generation, storage), so turns never
interleave or get lost; different conversations proceed independently (up to the model's queue).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from backend.app.backends.protocols import ChatMessage, ChatModel, GenerationOptions
from backend.app.core.errors import InvalidInputError
from backend.app.core.worker import ModelWorker
from backend.app.storage.conversations import ConversationStore, Turn

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str
    max_tokens: int
    temperature: float
    max_history_messages: int
    context_tokens: int
    max_chars: int


@dataclass(frozen=True)
class ChatReply:
    reply: str
    conversation_id: str
    llm_ms: float = 0.0


def check_conversation_id(conversation_id: str | None) -> str:
    """A new id when none is given; 422 for an id that is not 1-64 letters, digits, '-' or '_'."""
    if not conversation_id:
        return uuid.uuid4().hex
    if not _ID_RE.match(conversation_id):
        raise InvalidInputError("conversation_id must be 1-64 characters of letters, digits, '-' or '_'")
    return conversation_id


class ChatService:
    """Replies to a user message in the context of its stored conversation."""

    def __init__(
        self, backend: ChatModel, worker: ModelWorker, settings: ChatSettings, store: ConversationStore
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.store = store
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def serialised(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the conversation's lock; the lock is dropped when nobody holds or awaits it."""
        lock, users = self._locks.get(conversation_id, (asyncio.Lock(), 0))
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)

    def check_text(self, text: str) -> str:
        if not text.strip():
            raise InvalidInputError("text is empty")
        if len(text) > self.settings.max_chars:
            raise InvalidInputError(f"text is longer than {self.settings.max_chars} characters")
        return text.strip()

    def build_messages(self, conversation_id: str, text: str) -> list[ChatMessage]:
        """The system prompt, then as many recent turns as fit LLM_CONTEXT_TOKENS (minus room for the
        reply), then the new message. Older turns are dropped; the request is never over-long."""
        conversation = self.store.get(conversation_id)
        system = ChatMessage(
            "system", (conversation and conversation.system_prompt) or self.settings.system_prompt
        )
        user = ChatMessage("user", text)
        budget = self.settings.context_tokens - self.settings.max_tokens
        if self.backend.count_tokens([system, user]) > budget:
            raise InvalidInputError(
                "the message does not fit the model's context (LLM_CONTEXT_TOKENS minus LLM_MAX_TOKENS); "
                "send a shorter text"
            )
        keep = self.settings.max_history_messages
        turns = self.store.turns(conversation_id, limit=keep) if keep else []
        history = [ChatMessage("user" if t.role == "user" else "assistant", t.text) for t in turns]
        # Take whole exchanges from the newest back while they fit.
        kept: list[ChatMessage] = []
        for start in range(len(history) - 1, -1, -1):
            candidate = history[start:]
            if self.backend.count_tokens([system, *candidate, user]) > budget:
                break
            kept = candidate
        # Never start the window on an assistant turn: the model should see the question it answered.
        while kept and kept[0].role == "assistant":
            kept = kept[1:]
        return [system, *kept, user]

    async def generate(self, conversation_id: str, text: str) -> str:
        """A reply to `text` in the conversation's context (not stored; see `reply`)."""
        messages = await asyncio.to_thread(self.build_messages, conversation_id, text)
        options = GenerationOptions(self.settings.max_tokens, self.settings.temperature)
        return await self.worker.run(self.backend.chat, messages, options)

    async def store_turns(self, conversation_id: str, *turns: Turn) -> None:
        """Persist turns durably (they are on disk when this returns)."""
        await asyncio.to_thread(self.store.add_turns, conversation_id, turns)

    async def reply(self, text: str, conversation_id: str | None = None) -> ChatReply:
        text = self.check_text(text)
        conversation_id = check_conversation_id(conversation_id)
        async with self.serialised(conversation_id):
            asked = time.time()
            started = time.perf_counter()
            answer = await self.generate(conversation_id, text)
            llm_ms = round((time.perf_counter() - started) * 1000, 1)
            await self.store_turns(
                conversation_id,
                Turn("user", text, created_at=asked),
                Turn("assistant", answer, timings={"llm_ms": llm_ms}),
            )
        return ChatReply(answer, conversation_id, llm_ms)
