"""The chat service: conversation history per id, and replies from the chat model."""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from backend.app.backends.protocols import ChatMessage, ChatModel, GenerationOptions
from backend.app.core.errors import InvalidInputError
from backend.app.core.worker import ModelWorker

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str
    max_tokens: int
    temperature: float
    max_history_messages: int
    max_conversations: int
    max_chars: int


@dataclass(frozen=True)
class ChatReply:
    reply: str
    conversation_id: str


class ConversationMemory:
    """In-memory history per conversation id, least recently used dropped beyond a bound."""

    def __init__(self, max_conversations: int) -> None:
        self._max = max_conversations
        self._histories: OrderedDict[str, list[ChatMessage]] = OrderedDict()
        self._lock = threading.Lock()

    def history(self, conversation_id: str) -> list[ChatMessage]:
        with self._lock:
            return list(self._histories.get(conversation_id, ()))

    def append(self, conversation_id: str, *messages: ChatMessage) -> None:
        with self._lock:
            self._histories.setdefault(conversation_id, []).extend(messages)
            self._histories.move_to_end(conversation_id)
            while len(self._histories) > self._max:
                self._histories.popitem(last=False)


class ChatService:
    """Replies to a user message in the context of its conversation."""

    def __init__(self, backend: ChatModel, worker: ModelWorker, settings: ChatSettings) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.memory = ConversationMemory(settings.max_conversations)

    def _check(self, text: str, conversation_id: str | None) -> str:
        if not text.strip():
            raise InvalidInputError("text is empty")
        if len(text) > self.settings.max_chars:
            raise InvalidInputError(f"text is longer than {self.settings.max_chars} characters")
        if conversation_id is None or conversation_id == "":
            return uuid.uuid4().hex
        if not _ID_RE.match(conversation_id):
            raise InvalidInputError("conversation_id must be 1-64 characters of letters, digits, '-' or '_'")
        return conversation_id

    def build_messages(self, conversation_id: str, text: str) -> list[ChatMessage]:
        """System prompt + the last MAX_HISTORY_MESSAGES of the conversation + the new message."""
        keep = self.settings.max_history_messages
        history = self.memory.history(conversation_id)[-keep:] if keep else []
        # Never start the window on an assistant turn: the model should see the question it answered.
        while history and history[0].role == "assistant":
            history = history[1:]
        return [
            ChatMessage("system", self.settings.system_prompt),
            *history,
            ChatMessage("user", text.strip()),
        ]

    async def reply(self, text: str, conversation_id: str | None = None) -> ChatReply:
        conversation_id = self._check(text, conversation_id)
        messages = self.build_messages(conversation_id, text)
        options = GenerationOptions(self.settings.max_tokens, self.settings.temperature)
        answer = await self.worker.run(self.backend.chat, messages, options)
        self.memory.append(
            conversation_id, ChatMessage("user", text.strip()), ChatMessage("assistant", answer)
        )
        return ChatReply(answer, conversation_id)
