"""POST /v1/chat/completions, as OpenAI's: stateless (the client sends the whole history)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from backend.app.api.deps import ChatServiceDep, require_json
from backend.app.api.v1.deps import CatalogDep
from backend.app.api.v1.schemas import (
    OPENAI_ERRORS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ContentPart,
    FunctionCallOut,
    NamedToolChoice,
    ToolCallOut,
    Usage,
)
from backend.app.api.v1.streaming import openai_sse_response, sse_data
from backend.app.core.errors import InvalidInputError
from backend.app.core.tools import NAME, ToolRequest, check_tool, check_tools
from backend.app.core.values import ChatMessage, Role, ToolCall
from backend.app.services.completion import Completion

router = APIRouter(tags=["openai"])

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def _text(index: int, content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise InvalidInputError(
                f"messages[{index}]: only text content is supported, not {part.type!r}",
                param=f"messages.[{index}].content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _messages(messages: list[ChatMessageIn]) -> list[ChatMessage]:
    """The conversation as the engines take it. A `tool` message must answer a call made by an
    earlier assistant message (its `tool_call_id`), as OpenAI's API requires."""
    out: list[ChatMessage] = []
    called: set[str] = set()
    for index, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidInputError(
                f"messages[{index}]: the role {message.role!r} is not supported (the legacy "
                "`function` role: send `tool` messages with a tool_call_id)",
                param=f"messages.[{index}].role",
            )
        text = _text(index, message.content)
        if role == "tool":
            if not message.tool_call_id:
                raise InvalidInputError(
                    f"messages[{index}]: a tool message needs tool_call_id",
                    param=f"messages.[{index}].tool_call_id",
                )
            if message.tool_call_id not in called:
                raise InvalidInputError(
                    f"messages[{index}]: tool_call_id {message.tool_call_id[:80]!r} answers no call of an "
                    "earlier assistant message's tool_calls",
                    param=f"messages.[{index}].tool_call_id",
                )
            out.append(ChatMessage("tool", text, tool_call_id=message.tool_call_id))
            continue
        calls: tuple[ToolCall, ...] = ()
        if message.tool_calls and role == "assistant":
            for number, c in enumerate(message.tool_calls):
                if not NAME.match(c.function.name):
                    raise InvalidInputError(
                        f"messages[{index}]: a function name is 1-64 letters, digits, '_' or '-'",
                        param=f"messages.[{index}].tool_calls.[{number}].function.name",
                    )
            calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls)
            called.update(c.id for c in calls)
        out.append(ChatMessage(role, text, tool_calls=calls))
    return out


def _tools(body: ChatCompletionRequest) -> ToolRequest | None:
    """The request's tools, each checked (a 400 names the field), and how the model may use them."""
    choice = body.tool_choice
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    if not body.tools:
        if named is not None or choice == "required":
            raise InvalidInputError("tool_choice needs tools", param="tool_choice")
        return None
    specs = tuple(
        check_tool(i, t.function.name, t.function.description, t.function.parameters, "tools")
        for i, t in enumerate(body.tools)
    )
    mode = named or (choice if isinstance(choice, str) else "auto")
    check_tools(specs, mode)
    return ToolRequest(specs, mode, body.parallel_tool_calls)


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise InvalidInputError("stop takes at most 4 sequences", param="stop")
    return stops


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**OPENAI_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "The reply."}},
    dependencies=[Depends(require_json)],
)
async def create_chat_completion(
    body: ChatCompletionRequest, chat: ChatServiceDep, catalog: CatalogDep
) -> ChatCompletion | Response:
    """A reply to `messages` from the configured LLM, as OpenAI's `chat.completions.create`.

    Honoured: `max_tokens` / `max_completion_tokens` (default and ceiling LLM_MAX_TOKENS, the
    operator's bound on one reply: a larger request ends with finish_reason "length"), `temperature`
    (default LLM_TEMPERATURE), `stop`, `stream` and `stream_options.include_usage`, and tools:
    `tools`, `tool_choice` (`auto`, `none`, `required`, a named function), `parallel_tool_calls`,
    assistant messages with `tool_calls` and `tool` messages with `tool_call_id`. A call's
    arguments are checked against its function's schema; one the model writes wrong is generated
    again under the schema's grammar (llama.cpp) or given back as text. Other fields are accepted
    and ignored; `n` must be 1. Nothing is stored: use /chat for kept conversations.
    """
    model = catalog.resolve(body.model, "chat").id
    messages = _messages(body.messages)
    tools = _tools(body)
    stops = _stops(body.stop)
    options = chat.completion_options(body.max_completion_tokens or body.max_tokens, body.temperature)
    completion = await chat.open_completion(messages, options, stops, tools)  # 400 / 503 before any stream
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    events = completion.events
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(events, completion_id, created, model, include_usage)
        return openai_sse_response(chunks)
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Completion):
                calls = [
                    ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
                    for c in event.tool_calls
                ]
                message = AssistantMessage(
                    content=event.text or (None if calls else ""), tool_calls=calls or None
                )
                choice = Choice(message=message, finish_reason=event.finish_reason)
                return ChatCompletion(
                    id=completion_id, created=created, model=model, choices=[choice], usage=_usage(event)
                )
    raise AssertionError("a completion's events end with a Completion")


def _usage(end: Completion) -> Usage:
    return Usage(
        prompt_tokens=end.prompt_tokens,
        completion_tokens=end.completion_tokens,
        total_tokens=end.prompt_tokens + end.completion_tokens,
    )


async def _chunks(
    events: AsyncGenerator[str | ToolCall | Completion, None],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """`chat.completion.chunk`s: the role, the content deltas, each tool call (one chunk with its
    whole arguments), the finish reason, the usage (when asked), then `[DONE]`."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, object], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**head, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ToolCall):  # a call comes whole, its arguments checked
                yield chunk({"tool_calls": [{"index": calls, **event.openai()}]})
                calls += 1
            elif isinstance(event, Completion):
                yield chunk({}, event.finish_reason)
                if include_usage:
                    yield sse_data({**head, "choices": [], "usage": _usage(event).model_dump()})
            else:
                yield chunk({"content": event})
    yield sse_data("[DONE]")
