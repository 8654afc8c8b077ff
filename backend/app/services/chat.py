"""The chat service: persisted conversations, a token-budgeted context, and replies.

Requests on one conversation are serialised (history read, generation, storage; the lock is the
conversation history's), so turns never interleave or get lost; different conversations proceed
independently (up to the model's queue). Streamed work is opened after every check
(`open_reply`, `open_completion`), so routes never hold a model slot themselves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from backend.app.backends.protocols import ChatModel, ToolCallingChat
from backend.app.core.config import LLMSettings, ToolsSettings
from backend.app.core.errors import InvalidInputError, TextTooLongError
from backend.app.core.metrics import ServiceMetrics, StageTimer, elapsed_ms
from backend.app.core.quotas import current_account
from backend.app.core.tools import ToolRequest
from backend.app.core.values import ChatMessage, GenerationOptions, ModelInfo, ToolCall
from backend.app.core.worker import Admission, ModelWorker, OpenedStream
from backend.app.services.completion import Completions, CompletionStream
from backend.app.services.history import ConversationHistory, check_conversation_id
from backend.app.services.mcp_tools import McpTools, ToolStep
from backend.app.services.tool_loop import Confirmation, held, reply_with_tools, unserved
from backend.app.storage.rows import Turn
from backend.app.text.chinese import script_language
from backend.app.text.languages import language_name


@dataclass(frozen=True)
class ChatReply:
    reply: str
    conversation_id: str
    timings: dict[str, float] = field(default_factory=dict)
    """llm_first_token_ms and llm_ms."""
    tools: tuple[dict[str, Any], ...] = ()
    """The server-side (MCP) calls the reply made, with their results, as stored."""


@dataclass(frozen=True)
class ChatDelta:
    """A piece of a reply being generated."""

    text: str


@dataclass
class ReplyStream(OpenedStream[ChatDelta | ChatReply]):
    """A reply (`ChatService.open_reply`): `ChatDelta`s, then the `ChatReply`."""

    conversation_id: str = field(kw_only=True)


class ChatService:
    """Replies to a user message in the context of its stored conversation."""

    def __init__(
        self,
        backend: ChatModel,
        worker: ModelWorker,
        settings: LLMSettings,
        history: ConversationHistory,
        metrics: ServiceMetrics | None = None,
        max_chars: int = 5000,
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.max_chars = max_chars
        """The longest message accepted (MAX_TTS_CHARS)."""
        self.history = history
        self.metrics = metrics or ServiceMetrics()
        self.tools: McpTools | None = None
        """Server-side tools (MCP_SERVERS), set by the container when any are configured."""
        self._counted_tools: tuple[tuple[object, ...], int] = ((), 0)

    @property
    def info(self) -> ModelInfo:
        """The LLM: its id, name and device."""
        return self.backend.info

    def completion_options(self, max_tokens: int | None, temperature: float | None) -> GenerationOptions:
        """A generation's options: at most LLM_MAX_TOKENS tokens (the default), LLM_TEMPERATURE by default."""
        limit = min(max_tokens or self.settings.max_tokens, self.settings.max_tokens)
        return GenerationOptions(limit, self.settings.temperature if temperature is None else temperature)

    @property
    def capacity(self) -> int:
        """How many requests the model admits at once (running and queued)."""
        return self.worker.capacity

    def reserve(self) -> Admission:
        """An LLM slot for a reply that belongs to work admitted as a whole (a spoken turn, at its
        own gate): never refused, kept until the reply runs in it or it is released."""
        return self.worker.admit(reserved=True)

    def check_text(self, text: str) -> str:
        if not text.strip():
            raise InvalidInputError("text is empty")
        if len(text) > self.max_chars:
            raise TextTooLongError(f"text is longer than {self.max_chars} characters")
        return text.strip()

    def fit_spoken(self, text: str, language: str | None = None) -> str:
        """A transcript as the model can take it (blocking: tokenises). Speech is not bounded by
        MAX_TTS_CHARS (a recording within MAX_AUDIO_SECONDS must never be refused for what it
        said): one too long for the context keeps its newest words that fit, after an ellipsis.
        `language` is the one it was spoken in (the system prompt then asks for it)."""
        text = text.strip()
        if not text:
            raise InvalidInputError("text is empty")
        system = _answer_in(self._system_message(None), language or script_language(text))
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

    async def open_reply(self, text: str, conversation_id: str | None = None) -> ReplyStream:
        """A reply to `text` in its conversation, opened after every check, so that a streamed
        route fails with a 4xx, 503 or 507 before its response starts: the text, the id, the disk,
        the conversation's queue, the context fit, then the model's slot (taken now, kept for the
        reply). Both turns are stored at the end; a reply stopped early is stored as far as it was
        delivered, marked interrupted. Without `conversation_id` a new conversation starts."""
        text, conversation_id = await self.check_reply(text, conversation_id)
        admission = self.worker.admit()
        events = self._reply_events(text, conversation_id, admission)
        return ReplyStream(events, admission, conversation_id=conversation_id)

    async def check_reply(self, text: str, conversation_id: str | None) -> tuple[str, str]:
        """A typed message about to be answered, checked (see `open_reply`); (text, its id)."""
        text = self.check_text(text)
        conversation_id = check_conversation_id(conversation_id)
        self.history.require_room()
        self.history.check_room(conversation_id)
        system = _answer_in(self._system_message(conversation_id), script_language(text))
        await asyncio.to_thread(self._check_fit, system, text)
        return text, conversation_id

    def _system_message(self, conversation_id: str | None) -> ChatMessage:
        prompt = self.history.system_prompt(conversation_id) or self.settings.system_prompt
        return ChatMessage("system", prompt)

    def _check_fit(self, system: ChatMessage, text: str) -> None:
        budget = self.settings.context_tokens - self.settings.max_tokens
        if self.backend.count_tokens([system, ChatMessage("user", text)]) > budget:
            raise InvalidInputError(
                "the message does not fit the model's context (LLM_CONTEXT_TOKENS minus LLM_MAX_TOKENS); "
                "send a shorter text"
            )

    def build_messages(
        self,
        conversation_id: str,
        text: str | None,
        system_prompt: str | None = None,
        language: str | None = None,
    ) -> list[ChatMessage]:
        """The system prompt (`system_prompt`, else the conversation's, else LLM_SYSTEM_PROMPT;
        with `language`, the language the user spoke, other than English, it asks for the answer in
        that language; typed text with no `language` gives its own when its script does: Chinese,
        Japanese, Korean), then as many recent turns as fit LLM_CONTEXT_TOKENS (minus room for the
        reply), then the new message (none when `text` is None: the reply is to the stored turns as
        they are). Older turns are dropped; the request is never over-long."""
        system = (
            ChatMessage("system", system_prompt) if system_prompt else self._system_message(conversation_id)
        )
        system = _answer_in(system, language or script_language(text or ""))
        new = [ChatMessage("user", text)] if text is not None else []
        # The tools' descriptions are part of the prompt when MCP tools are offered.
        budget = self.settings.context_tokens - self.settings.max_tokens - self._tools_tokens()
        self._check_fit(system, text or "")
        turns = self.history.recent_turns(conversation_id, self.settings.max_history_messages)
        # A reply cut off before any of it was heard is kept in the record, not shown to the model.
        history = [m for t in turns for m in _as_messages(t)]
        # The longest tail of the history that fits: fewer messages never take more tokens, so a
        # binary search finds it in a handful of tokenisations rather than one per message.
        fits, over = len(history), -1  # history[fits:] fits (the empty tail does); history[over:] not
        if self.backend.count_tokens([system, *history, *new]) <= budget:
            fits = 0
        else:
            over = 0
            while fits - over > 1:
                middle = (fits + over) // 2
                if self.backend.count_tokens([system, *history[middle:], *new]) <= budget:
                    fits = middle
                else:
                    over = middle
        kept = history[fits:]
        # Never start the window on an assistant turn: the model should see the question it answered.
        while kept and kept[0].role in ("assistant", "tool") and (new or len(kept) > 1):
            kept = kept[1:]
        return [system, *kept, *new]

    def _tools_tokens(self) -> int:
        """Tokens the MCP tools' descriptions take in a prompt (blocking; kept per tool list)."""
        specs = self.tools.specs if self.tools is not None else ()
        if not specs or not isinstance(self.backend, ToolCallingChat):
            return 0
        if self._counted_tools[0] != specs:
            described = json.dumps([t.openai() for t in specs])
            self._counted_tools = (specs, self.backend.count_text_tokens(described) + 16 * len(specs))
        return self._counted_tools[1]

    def _stream(
        self,
        admission: Admission | None,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        text: str,
        client: ToolRequest | None = None,
        hold: Confirmation | None = None,
    ) -> AsyncGenerator[str | ToolStep | ToolCall, None]:
        """The model's deltas, in `admission`'s slot when the caller took one up front; with tools
        (MCP's, and the `client`'s own) and an engine that calls them, through tool_loop.py."""
        work: Callable[[], Iterator[str | ToolStep | ToolCall]]
        work = functools.partial(self.backend.chat_stream, messages, options)
        tools, backend, account = self.tools, self.backend, current_account.get()
        allowed = account is None or "tools" in account.key.scopes  # a key needs the `tools` scope
        served = tools.specs if tools is not None and allowed else ()
        theirs = client.tools if client is not None and client.choice != "none" else ()
        if (served or theirs) and isinstance(backend, ToolCallingChat):
            choice, parallel = (client.choice, client.parallel) if client is not None else ("auto", True)
            limits = self.tools.settings if self.tools is not None else ToolsSettings()
            work = functools.partial(
                reply_with_tools,
                backend,
                messages,
                options,
                ToolRequest((*theirs, *served), choice, parallel),
                held(tools.call_blocking, hold) if tools is not None else unserved,
                limits.max_steps,
                # Said for the server's own tools only: a client with its own speaks for itself.
                limits.acknowledgement if script_language(text) is None and not theirs else "",
                frozenset(t.name for t in theirs),
            )
        return admission.stream(work) if admission is not None else self.worker.stream(work)

    async def generate(
        self,
        conversation_id: str,
        text: str,
        admission: Admission | None = None,
        messages: Sequence[ChatMessage] | None = None,
        max_tokens: int | None = None,
        steps: list[ToolStep] | None = None,
        client: ToolRequest | None = None,
        calls: list[ToolCall] | None = None,
        hold: Confirmation | None = None,
    ) -> AsyncGenerator[str, None]:
        """A reply to `text` in the conversation's context, as text deltas (not stored; see `reply`).

        The context is `build_messages` now, or `messages` when the caller built it before storing `text` (a
        spoken turn stores the user's words first; they must not appear twice). Runs in `admission`'s slot if
        given (see `open_reply`), else is admitted when it starts; `max_tokens` shortens it (never beyond
        LLM_MAX_TOKENS). The calls of server-side tools it makes go to `steps`; with the `client`'s own tools,
        the calls it ends with go to `calls`. With `hold` (a pre-emptive reply's commitment), a server-side
        call waits until it is confirmed: no tool acts on words the user may not have finished. Closing
        this iterator early stops the generation on the model's worker."""
        timer = StageTimer(self.metrics, "llm_first_token", "llm")
        try:
            if messages is None:
                messages = await asyncio.to_thread(self.build_messages, conversation_id, text)
            options = self.completion_options(max_tokens, None)
            leading = True
            async with aclosing(self._stream(admission, messages, options, text, client, hold)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, ToolStep):
                        if steps is not None:
                            steps.append(delta)
                        continue
                    if isinstance(delta, ToolCall):
                        if calls is not None:
                            calls.append(delta)
                        continue
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

    async def complete_whole(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        """A stateless completion at once (nothing stored), admitted as any request (503 when the
        model's queue is full); for internal uses that check their own budget (text rewriting)."""
        return await self.worker.run(self.backend.chat, messages, options)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of `messages` for this model (blocking: tokenises)."""
        return self.backend.count_tokens(messages)

    def count_text_tokens(self, text: str) -> int:
        """Tokens of `text` for this model (blocking: tokenises)."""
        return self.backend.count_text_tokens(text)

    async def open_completion(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        stop: Sequence[str] = (),
        tools: ToolRequest | None = None,
    ) -> CompletionStream:
        """A stateless completion of `messages`, which may call `tools` (services/completion.py)."""
        completions = Completions(self.backend, self.worker, self.settings, self.metrics)
        return await completions.begin(messages, options, stop, tools)

    async def _reply_events(
        self, text: str, conversation_id: str, admission: Admission | None
    ) -> AsyncGenerator[ChatDelta | ChatReply, None]:
        async with self.history.serialised(conversation_id):
            asked = time.time()
            started = time.perf_counter()
            timings: dict[str, float] = {}
            parts: list[str] = []
            steps: list[ToolStep] = []
            finished = False
            try:
                async with aclosing(self.generate(conversation_id, text, admission, steps=steps)) as deltas:
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
                    await self.history.add_turns(
                        conversation_id,
                        Turn("user", text, created_at=asked),
                        Turn(
                            "assistant",
                            answer,
                            timings=dict(timings),
                            interrupted=not finished,
                            tools=tuple(step.stored() for step in steps),
                        ),
                    )
        yield ChatReply(answer, conversation_id, timings, tuple(step.stored() for step in steps))

    async def reply(self, text: str, conversation_id: str | None = None) -> ChatReply:
        """The whole reply at once. Checked as `open_reply`, but the model's slot is taken only
        once the conversation's earlier requests are done (nothing has been sent yet, so a 503
        then is still a clean answer): requests queued on one conversation hold no slot."""
        text, conversation_id = await self.check_reply(text, conversation_id)
        async with aclosing(self._reply_events(text, conversation_id, None)) as events:
            async for event in events:
                if isinstance(event, ChatReply):
                    return event
        raise AssertionError("a reply's events end with a ChatReply")


def _answer_in(system: ChatMessage, language: str | None) -> ChatMessage:
    """The system prompt, asking for the answer in `language` when it is not English."""
    if not language or language == "en":
        return system
    name = language_name(language).title()
    return ChatMessage("system", f"{system.content}\n\nThe user speaks {name}: answer in {name}.")


def _as_messages(turn: Turn) -> list[ChatMessage]:
    """A stored turn as the model reads it again: an assistant turn that called tools is its calls,
    their results (`tool` messages), then its answer."""
    if turn.role == "user":
        return [ChatMessage("user", turn.text)] if turn.text else []
    messages = []
    for step in turn.tools:
        call = ToolCall(str(step.get("id", "")), str(step.get("name", "")), str(step.get("arguments", "")))
        messages.append(ChatMessage("assistant", "", tool_calls=(call,)))
        messages.append(ChatMessage("tool", str(step.get("result", "")), tool_call_id=call.id))
    return [*messages, ChatMessage("assistant", turn.text)] if turn.text else messages
