"""Server-Sent Events for the streamed routes (`stream=true`).

Every event has a name (`event: reply_delta`) and a JSON object as data; the names are those of the
realtime WebSocket's `type`s. An error after the stream has started cannot change the HTTP status,
so it becomes a last `event: error` with the same `{"code", "message"}` as an error response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from backend.app.core.errors import AppError

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(name: str, data: dict[str, object]) -> bytes:
    """One event in the text/event-stream wire format."""
    return format_sse_event(event=name, data_str=json.dumps(data, ensure_ascii=False))


async def _guarded(events: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    try:
        async for event in events:
            yield event
    except AppError as e:
        yield sse_event("error", {"code": e.code, "message": e.message})
    except Exception:
        logger.exception("a streamed response failed")
        yield sse_event("error", {"code": "internal_error", "message": "the server failed; see its log"})


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Stream `events` (already formatted by `sse_event`) as text/event-stream."""
    return StreamingResponse(_guarded(events), media_type="text/event-stream", headers=SSE_HEADERS)
