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
    Usage,
)
from backend.app.api.v1.streaming import openai_sse_response, sse_data
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import ChatMessage, Role
from backend.app.services.chat import Completion

router = APIRouter(tags=["openai"])

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def _message(index: int, message: ChatMessageIn) -> ChatMessage:
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidInputError(
            f"messages[{index}]: the role {message.role!r} is not supported (no tools or functions here)",
            param=f"messages.[{index}].role",
        )
    content = message.content
    if content is None or isinstance(content, str):
        return ChatMessage(role, content or "")
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise InvalidInputError(
                f"messages[{index}]: only text content is supported, not {part.type!r}",
                param=f"messages.[{index}].content",
            )
        texts.append(part.text)
    return ChatMessage(role, "\n".join(texts))


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
    (default LLM_TEMPERATURE), `stop`, `stream` and `stream_options.include_usage`. Other fields
    are accepted and ignored; `n` must be 1. Nothing is stored: use /chat for kept conversations.
    """
    model = catalog.resolve(body.model, "chat").id
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    stops = _stops(body.stop)
    options = chat.completion_options(body.max_completion_tokens or body.max_tokens, body.temperature)
    completion = await chat.open_completion(messages, options, stops)  # 400 / 503 before any stream
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    events = completion.events
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(events, completion_id, created, model, include_usage)
        return openai_sse_response(chunks)
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Completion):
                message = AssistantMessage(content=event.text)
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
    events: AsyncGenerator[str | Completion, None],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """`chat.completion.chunk`s: the role, the content deltas, the finish reason, the usage (when
    asked), then `[DONE]`."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**head, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Completion):
                yield chunk({}, event.finish_reason)
                if include_usage:
                    yield sse_data({**head, "choices": [], "usage": _usage(event).model_dump()})
            else:
                yield chunk({"content": event})
    yield sse_data("[DONE]")
