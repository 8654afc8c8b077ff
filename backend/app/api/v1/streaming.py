"""Server-Sent Events as OpenAI streams them: `data: {json}` lines, no event names.

An error after the stream has started cannot change the HTTP status: it is sent as a last
`data: {"error": {...}}`, which the openai SDK raises as an APIError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from backend.app.api.sse import sse_response


def sse_data(payload: dict[str, object] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _error(code: str, message: str, param: str | None) -> bytes:
    return sse_data({"error": {"message": message, "type": "server_error", "param": param, "code": code}})


def openai_sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Stream `events` (formatted by `sse_data`) as text/event-stream, errors included."""
    return sse_response(events, _error)
