"""Server-Sent Events for the streamed routes (`stream=true`).

Every event has a name (`event: reply_delta`) and a JSON object as data; the names are those of the
realtime WebSocket's `type`s. An error after the stream has started cannot change the HTTP status,
so it becomes a last `event: error` with the same `{"code", "message"}` as an error response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from backend.app.core.errors import AppError

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(name: str, data: dict[str, object]) -> bytes:
    """One event in the text/event-stream wire format."""
    return format_sse_event(event=name, data_str=json.dumps(data, ensure_ascii=False))


ErrorEvent = Callable[[str, str, str | None], bytes]
"""Formats the last event of a failed stream from the error's code, message and param."""


def _error_event(code: str, message: str, param: str | None) -> bytes:
    return sse_event("error", {"code": code, "message": message})


async def _guarded(events: AsyncIterator[bytes], error_event: ErrorEvent) -> AsyncGenerator[bytes, None]:
    try:
        async for event in events:
            yield event
    except AppError as e:
        yield error_event(e.code, e.message, e.param)
    except Exception:
        logger.exception("a streamed response failed")
        yield error_event("internal_error", "the server failed; see its log", None)


def sse_response(events: AsyncIterator[bytes], error_event: ErrorEvent = _error_event) -> StreamingResponse:
    """Stream `events` (already formatted) as text/event-stream; an error ends it with `error_event`."""
    return StreamingResponse(
        _guarded(events, error_event), media_type="text/event-stream", headers=SSE_HEADERS
    )
