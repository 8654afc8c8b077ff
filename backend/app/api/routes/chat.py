"""POST /chat: one message in a conversation, as a form or as JSON."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from backend.app.api.deps import ChatServiceDep, media_type
from backend.app.api.schemas import ERROR_RESPONSES, ChatRequest, ChatResponse, ToolStepOut
from backend.app.api.sse import sse_event, sse_response
from backend.app.core import json_guard
from backend.app.core.errors import InvalidInputError, UnsupportedMediaTypeError
from backend.app.services.chat import ChatDelta, ReplyStream

router = APIRouter(tags=["chat"])

_BODY_SCHEMA = {"$ref": "#/components/schemas/ChatRequest"}


async def _parse_chat_request(request: Request) -> ChatRequest:
    content_type = media_type(request)
    try:
        if content_type == "application/json":
            try:
                payload = json_guard.loads(await request.body())
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise InvalidInputError(f"the body is not valid JSON ({e})") from e
            if not isinstance(payload, dict):
                raise InvalidInputError("the JSON body must be an object")
            return ChatRequest.model_validate(payload)
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            return ChatRequest.model_validate(fields)
    except ValidationError as e:
        message = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise InvalidInputError(message) from e
    raise UnsupportedMediaTypeError(
        "send application/json or a form (application/x-www-form-urlencoded, multipart/form-data)"
    )


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "The reply (JSON, or SSE with stream)."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _BODY_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _BODY_SCHEMA},
            },
        }
    },
)
async def chat(request: Request, chat: ChatServiceDep) -> ChatResponse | Response:
    """Reply to `text`. Without `conversation_id` a new conversation starts; its id is returned.

    With `stream=true` the answer is Server-Sent Events: `reply_delta` events (`{"text"}`) as the
    reply is generated, then `done` (`{"reply", "conversation_id", "timings", "tools"}`), or `error`.
    """
    body = await _parse_chat_request(request)
    if body.stream:
        stream = await chat.open_reply(body.text, body.conversation_id)  # 4xx/503 before the stream
        return sse_response(_chat_events(stream))
    answer = await chat.reply(body.text, body.conversation_id)
    return ChatResponse(
        reply=answer.reply,
        conversation_id=answer.conversation_id,
        timings=answer.timings,
        tools=[ToolStepOut.model_validate(step) for step in answer.tools],
    )


async def _chat_events(stream: ReplyStream) -> AsyncGenerator[bytes, None]:
    async with aclosing(stream.events) as events:
        async for event in events:
            if isinstance(event, ChatDelta):
                yield sse_event("reply_delta", {"text": event.text})
            else:
                done = {"reply": event.reply, "conversation_id": event.conversation_id}
                yield sse_event("done", {**done, "timings": event.timings, "tools": list(event.tools)})
