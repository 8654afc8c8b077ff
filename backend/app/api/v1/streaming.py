"""Server-Sent Events as OpenAI streams them: `data: {json}` lines, no event names.

An error after the stream has started cannot change the HTTP status: it is sent as a last
`data: {"error": {...}}`, which the openai SDK raises as an APIError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi.responses import StreamingResponse

from backend.app.api.sse import SSE_HEADERS
from backend.app.core.errors import AppError

logger = logging.getLogger(__name__)


def sse_data(payload: dict[str, object] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _error(message: str, code: str | None, param: str | None = None) -> bytes:
    return sse_data({"error": {"message": message, "type": "server_error", "param": param, "code": code}})


async def _guarded(events: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    try:
        async for event in events:
            yield event
    except AppError as e:
        yield _error(e.message, e.code, e.param)
    except Exception:
        logger.exception("a streamed /v1 response failed")
        yield _error("the server failed; see its log", "internal_error")


def openai_sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Stream `events` (formatted by `sse_data`) as text/event-stream, errors included."""
    return StreamingResponse(_guarded(events), media_type="text/event-stream", headers=SSE_HEADERS)
