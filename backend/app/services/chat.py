"""The chat service: persisted conversations, a token-budgeted context, and replies.

Requests on one conversation are serialised (history read, generation, storage), so turns never
interleave or get lost; different conversations proceed independently (up to the model's queue).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio

from backend.app.backends.protocols import ChatModel
from backend.app.core.errors import ContextLengthError, InvalidInputError, OverloadedError, TextTooLongError
from backend.app.core.metrics import ServiceMetrics, StageTimer
from backend.app.core.values import ChatMessage, GenerationOptions
from backend.app.core.worker import Admission, ModelWorker
from backend.app.storage.conversations import ConversationStore, Turn

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str
    max_tokens: int
    temperature: float
    max_history_messages: int
    context_tokens: int
    max_chars: int
    max_per_conversation: int = 5


@dataclass(frozen=True)
class ChatReply:
    reply: str
    conversation_id: str
    timings: dict[str, float] = field(default_factory=dict)
    """llm_first_token_ms and llm_ms."""


@dataclass(frozen=True)
class ChatDelta:
    """A piece of a reply being generated."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a stateless completion (the OpenAI-compatible route): the whole text, why it
    ended, and token counts (exact with a local tokenizer, estimated for a remote server)."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class StopScanner:
    """Cuts a streamed text at the first of some stop strings, which may span deltas: text that
    could be the start of a stop string is held back until the next delta settles it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, delta: str) -> str:
        """The part of `delta` (with what was held) that is certainly before any stop string."""
        if not self.stops:
            return delta
        text = self._held + delta
        hits = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[: min(hits)]
        keep = 0
        for size in range(min(len(text), max(map(len, self.stops)) - 1), 0, -1):
            if any(stop.startswith(text[-size:]) for stop in self.stops):
                keep = size
                break
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start` (a `time.perf_counter()` value), to 0.1 ms."""
    return round((time.perf_counter() - start) * 1000, 1)


def check_conversation_id(conversation_id: str | None) -> str:
    """A new id when none is given; 422 for an id that is not 1-64 letters, digits, '-' or '_'."""
    if not conversation_id:
        return uuid.uuid4().hex
    if not _ID_RE.fullmatch(conversation_id):  # fullmatch: `$` would let a trailing newline in
        raise InvalidInputError("conversation_id must be 1-64 characters of letters, digits, '-' or '_'")
    return conversation_id


class ChatService:
    """Replies to a user message in the context of its stored conversation."""

    def __init__(
        self,
        backend: ChatModel,
        worker: ModelWorker,
        settings: ChatSettings,
        store: ConversationStore,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.store = store
        self.metrics = metrics or ServiceMetrics()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def check_room(self, conversation_id: str) -> None:
        """503 when the conversation already has CONVERSATION_QUEUE_SIZE + 1 requests in progress:
        waiting on its lock is a queue too, and bounded."""
        _, users = self._locks.get(conversation_id, (None, 0))
        if users >= self.settings.max_per_conversation:
            raise OverloadedError(
                f"conversation {conversation_id} has {users} requests in progress; retry shortly",
                retry_after_s=2,
            )

    @asynccontextmanager
    async def serialised(self, conversation_id: str) -> AsyncGenerator[None, None]:
        """Hold the conversation's lock; the lock is dropped when nobody holds or awaits it.
        Refused (503) when too many requests wait for it already (`check_room`)."""
        self.check_room(conversation_id)
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
            raise TextTooLongError(f"text is longer than {self.settings.max_chars} characters")
        return text.strip()

    def fit_spoken(self, text: str) -> str:
        """A transcript as the model can take it (blocking: tokenises). Speech is not bounded by
        MAX_TTS_CHARS (a recording within MAX_AUDIO_SECONDS must never be refused for what it
        said): one too long for the context keeps its newest words that fit, after an ellipsis."""
        text = text.strip()
        if not text:
            raise InvalidInputError("text is empty")
        system = self._system_message(None)
        budget = self.settings.context_tokens - self.settings.max_tokens
        if self.backend.count_tokens([system, ChatMessage("user", text)]) <= budget:
            return text

        def fits(candidate: str) -> bool:
            return self.backend.count_tokens([system, ChatMessage("user", candidate)]) <= budget

        # Words where there are spaces; characters for Chinese and Japanese, which have none.
        words, joiner = text.split(), " "
        if not fits("… " + words[-1]):
            words, joiner = list(text), ""
        low, high = 0, len(words)  # the most trailing units that fit, by bisection
        while low < high:
            middle = (low + high + 1) // 2
            if fits("… " + joiner.join(words[-middle:])):
                low = middle
            else:
                high = middle - 1
        return "… " + joiner.join(words[len(words) - low :])

    async def prepare(self, text: str, conversation_id: str | None) -> Admission:
        """Every check a reply makes before generating, so a streamed route can fail with a 4xx or
        503 before its response starts: the text, the id, the context fit; then the model's slot,
        taken now and kept for `reply_stream(..., admission=)`."""
        text = self.check_text(text)
        check_conversation_id(conversation_id)
        self.store.require_room()
        if conversation_id:
            self.check_room(conversation_id)
        await asyncio.to_thread(self._check_fit, self._system_message(conversation_id), text)
        return self.worker.admit()

    def _system_message(self, conversation_id: str | None) -> ChatMessage:
        conversation = self.store.get(conversation_id) if conversation_id else None
        prompt = (conversation and conversation.system_prompt) or self.settings.system_prompt
        return ChatMessage("system", prompt)

    def _check_fit(self, system: ChatMessage, text: str) -> None:
        budget = self.settings.context_tokens - self.settings.max_tokens
        if self.backend.count_tokens([system, ChatMessage("user", text)]) > budget:
            raise InvalidInputError(
                "the message does not fit the model's context (LLM_CONTEXT_TOKENS minus LLM_MAX_TOKENS); "
                "send a shorter text"
            )

    def build_messages(self, conversation_id: str, text: str) -> list[ChatMessage]:
        """The system prompt, then as many recent turns as fit LLM_CONTEXT_TOKENS (minus room for the
        reply), then the new message. Older turns are dropped; the request is never over-long."""
        system = self._system_message(conversation_id)
        user = ChatMessage("user", text)
        budget = self.settings.context_tokens - self.settings.max_tokens
        self._check_fit(system, text)
        keep = self.settings.max_history_messages
        turns = self.store.turns(conversation_id, limit=keep) if keep else []
        # A reply cut off before any of it was heard is kept in the record, not shown to the model.
        history = [ChatMessage("user" if t.role == "user" else "assistant", t.text) for t in turns if t.text]
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

    def _stream(
        self, admission: Admission | None, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> AsyncGenerator[str, None]:
        """The model's deltas, in `admission`'s slot when the caller took one up front."""
        if admission is None:
            return self.worker.stream(self.backend.chat_stream, messages, options)
        return admission.stream(self.backend.chat_stream, messages, options)

    async def generate(
        self, conversation_id: str, text: str, admission: Admission | None = None
    ) -> AsyncGenerator[str, None]:
        """A reply to `text` in the conversation's context, as text deltas (not stored; see `reply`).

        Runs in `admission`'s slot if given (see `prepare`), else is admitted when it starts.
        Closing this iterator early stops the generation on the model's worker."""
        timer = StageTimer(self.metrics, "llm_first_token", "llm")
        try:
            messages = await asyncio.to_thread(self.build_messages, conversation_id, text)
            options = GenerationOptions(self.settings.max_tokens, self.settings.temperature)
            leading = True
            async with aclosing(self._stream(admission, messages, options)) as deltas:
                async for delta in deltas:
                    if leading:
                        delta = delta.lstrip()
                        if not delta:
                            continue
                        leading = False
                    timer.first()
                    yield delta
            timer.done()
        finally:
            if admission is not None:
                admission.release()  # unused if the generation never started

    async def check_completion(
        self, messages: Sequence[ChatMessage], max_tokens: int
    ) -> tuple[int, Admission]:
        """The prompt's token count and the model's slot, after every check a stateless completion
        makes before it starts: the context fit (400 context_length_exceeded, as OpenAI), then the
        model's queue (503), whose slot is taken now for `complete(..., admission=)`."""
        if not messages:
            raise InvalidInputError("messages must not be empty", param="messages")
        context = self.settings.context_tokens
        # No token is longer than a few dozen characters: refuse huge inputs without tokenising.
        if sum(len(m.content) for m in messages) > context * 32:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens; the messages are far "
                "longer. Please reduce the length of the messages.",
                param="messages",
            )
        prompt_tokens = await asyncio.to_thread(self.backend.count_tokens, messages)
        if prompt_tokens + max_tokens > context:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                "in the completion). Please reduce the length of the messages or completion.",
                param="messages",
            )
        return prompt_tokens, self.worker.admit()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        stop: Sequence[str] = (),
        checked: tuple[int, Admission] | None = None,
    ) -> AsyncGenerator[str | Completion, None]:
        """A stateless completion of `messages` (nothing is stored): text deltas, then a
        `Completion`. Generation stops at the first stop string, which is not part of the text.
        `checked` is what `check_completion` returned, when the caller checked up front."""
        if checked is None:
            checked = await self.check_completion(messages, options.max_tokens)
        prompt_tokens, admission = checked
        timer = StageTimer(self.metrics, "llm_first_token", "llm")
        scanner = StopScanner(stop)
        parts: list[str] = []
        leading = True
        async with aclosing(admission.stream(self.backend.chat_stream, messages, options)) as deltas:
            async for delta in deltas:
                if leading:
                    delta = delta.lstrip()
                    leading = not delta
                text = scanner.feed(delta)
                if text:
                    timer.first()
                    parts.append(text)
                    yield text
                if scanner.stopped:
                    break
        timer.done()
        tail = "" if scanner.stopped else scanner.flush()
        if tail:
            parts.append(tail)
            yield tail
        answer = "".join(parts)
        completion_tokens = await asyncio.to_thread(self.backend.count_text_tokens, answer)
        ran_out = not scanner.stopped and completion_tokens >= options.max_tokens
        yield Completion(answer, "length" if ran_out else "stop", prompt_tokens, completion_tokens)

    async def store_turns(self, conversation_id: str, *turns: Turn) -> None:
        """Persist turns durably (they are on disk when this returns). Shielded from cancellation:
        a reply cut short by a vanished client is still recorded."""
        with anyio.CancelScope(shield=True):
            await asyncio.to_thread(self.store.add_turns, conversation_id, turns)

    async def reply_stream(
        self, text: str, conversation_id: str | None = None, admission: Admission | None = None
    ) -> AsyncGenerator[ChatDelta | ChatReply, None]:
        """Deltas of the reply, then the whole `ChatReply`. Both turns are stored at the end; if the
        stream stops early, what was delivered is stored as an interrupted reply. `admission` is
        the slot `prepare` took, for a reply whose response has already started."""
        text = self.check_text(text)
        conversation_id = check_conversation_id(conversation_id)
        self.store.require_room()  # the reply is stored: refused before any work on a full disk
        async with self.serialised(conversation_id):
            asked = time.time()
            started = time.perf_counter()
            timings: dict[str, float] = {}
            parts: list[str] = []
            finished = False
            try:
                async with aclosing(self.generate(conversation_id, text, admission)) as deltas:
                    async for delta in deltas:
                        timings.setdefault("llm_first_token_ms", elapsed_ms(started))
                        parts.append(delta)
                        yield ChatDelta(delta)
                finished = True
            finally:
                timings["llm_ms"] = elapsed_ms(started)
                timings.setdefault("llm_first_token_ms", timings["llm_ms"])
                answer = "".join(parts).strip()
                if finished or answer:
                    await self.store_turns(
                        conversation_id,
                        Turn("user", text, created_at=asked),
                        Turn("assistant", answer, timings=dict(timings), interrupted=not finished),
                    )
        yield ChatReply(answer, conversation_id, timings)

    async def reply(self, text: str, conversation_id: str | None = None) -> ChatReply:
        """The whole reply at once: the stream, collected."""
        async with aclosing(self.reply_stream(text, conversation_id)) as events:
            async for event in events:
                if isinstance(event, ChatReply):
                    return event
        raise AssertionError("reply_stream ends with a ChatReply")
