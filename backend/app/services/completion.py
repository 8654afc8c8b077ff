"""Stateless completions (the OpenAI-compatible route): the client sends the whole conversation,
and the reply may call the tools the request offers.

Nothing is stored. The work is opened after every check, so that a streamed response fails with
a 4xx or 503 before it starts: the tools (an engine that cannot call them is a 400), the context
fit (400 context_length_exceeded, as OpenAI's), then the model's queue (503), whose slot is taken
then and kept for the generation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from backend.app.backends.protocols import ChatModel, ToolCallingChat
from backend.app.core.config import LLMSettings
from backend.app.core.errors import ContextLengthError, InvalidInputError
from backend.app.core.metrics import ServiceMetrics, StageTimer
from backend.app.core.tools import ToolRequest
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ToolCall
from backend.app.core.worker import Admission, ModelWorker, OpenedStream
from backend.app.text.stops import StopScanner


@dataclass(frozen=True)
class Completion:
    """The end of a stateless completion: the whole text, the calls it makes, why it ended, and
    token counts (exact with a local tokenizer, estimated for a remote server)."""

    text: str
    finish_reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass
class CompletionStream(OpenedStream[str | ToolCall | Completion]):
    """Text deltas and calls as they come, then the `Completion`."""

    prompt_tokens: int = field(kw_only=True)


class Completions:
    """Stateless completions on the chat stage's model and worker."""

    def __init__(
        self, backend: ChatModel, worker: ModelWorker, settings: LLMSettings, metrics: ServiceMetrics
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.settings = settings
        self.metrics = metrics

    async def begin(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        stop: Sequence[str] = (),
        tools: ToolRequest | None = None,
    ) -> CompletionStream:
        """A completion of `messages`, opened after every check (above). Generation stops at the
        first stop string, which is not part of the text."""
        if not messages:
            raise InvalidInputError("messages must not be empty", param="messages")
        if tools is not None and not tools.tools:
            tools = None
        if tools is not None and not isinstance(self.backend, ToolCallingChat):
            raise InvalidInputError(
                f"the LLM ({self.backend.info.model}) cannot call tools on this engine: use llama.cpp or an "
                "OpenAI-compatible server (LLM_ENGINE), or send the request without tools",
                param="tools",
            )
        context = self.settings.context_tokens
        # The tools' descriptions are part of the prompt (the template writes them in).
        described = sum(len(json.dumps(t.openai())) for t in tools.offered) if tools is not None else 0
        # No token is longer than a few dozen characters: refuse huge inputs without tokenising.
        if sum(len(m.content) for m in messages) + described > context * 32:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens; the messages are far "
                "longer. Please reduce the length of the messages.",
                param="messages",
            )
        prompt_tokens = await asyncio.to_thread(self.backend.count_tokens, messages)
        if tools is not None and described:
            offered = json.dumps([t.openai() for t in tools.offered])
            prompt_tokens += await asyncio.to_thread(self.backend.count_text_tokens, offered)
        if prompt_tokens + options.max_tokens > context:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + options.max_tokens} tokens ({prompt_tokens} in the messages, "
                f"{options.max_tokens} in the completion). Please reduce the length of the messages or "
                "completion.",
                param="messages",
            )
        admission = self.worker.admit()
        events = self._completion(messages, options, stop, prompt_tokens, admission, tools)
        return CompletionStream(events, admission, prompt_tokens=prompt_tokens)

    def _deltas(
        self,
        admission: Admission,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        tools: ToolRequest | None,
    ) -> AsyncGenerator[str | ToolCall | CallPending, None]:
        if tools is None:
            return admission.stream(self.backend.chat_stream, messages, options)
        backend = self.backend
        assert isinstance(backend, ToolCallingChat)
        return admission.stream(backend.chat_tools_stream, messages, options, tools)

    async def _completion(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        stop: Sequence[str],
        prompt_tokens: int,
        admission: Admission,
        tools: ToolRequest | None,
    ) -> AsyncGenerator[str | ToolCall | Completion, None]:
        timer = StageTimer(self.metrics, "llm_first_token", "llm")
        scanner = StopScanner(stop)
        parts: list[str] = []
        calls: list[ToolCall] = []
        leading = True
        async with aclosing(self._deltas(admission, messages, options, tools)) as deltas:
            async for delta in deltas:
                if isinstance(delta, CallPending):
                    continue
                if isinstance(delta, ToolCall):
                    timer.first()
                    calls.append(delta)
                    yield delta
                    continue
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
        written = answer + "".join(c.name + c.arguments for c in calls)
        completion_tokens = await asyncio.to_thread(self.backend.count_text_tokens, written)
        ran_out = not scanner.stopped and completion_tokens >= options.max_tokens
        reason: Literal["stop", "length", "tool_calls"] = (
            "tool_calls" if calls else "length" if ran_out else "stop"
        )
        yield Completion(answer, reason, prompt_tokens, completion_tokens, tuple(calls))
