"""ASGI middleware: bearer-token auth and an early refusal of oversize request bodies."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.app.core.errors import error_response_parts

# Multipart framing and form fields around the file itself.
_MULTIPART_SLACK = 64 * 1024


async def _send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: dict[str, str]
) -> None:
    status, payload = error_response_parts(scope["path"], status, code, message)
    body = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BearerAuthMiddleware:
    """When a key is set, every route except /health* needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith("/health"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(supplied, self._expected):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_error(
                scope,
                send,
                401,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer <key>)",
                {"www-authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse a request whose declared Content-Length exceeds the upload limit, before reading it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes + _MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None:
                try:
                    length = int(declared)
                except ValueError:
                    await _send_error(scope, send, 400, "bad_request", "invalid Content-Length", {})
                    return
                if length > self.max_bytes:
                    limit_mb = (self.max_bytes - _MULTIPART_SLACK) / 1024 / 1024
                    await _send_error(
                        scope,
                        send,
                        413,
                        "payload_too_large",
                        f"the request body is larger than the {limit_mb:g} MB limit",
                        {"connection": "close"},
                    )
                    return
        await self.app(scope, receive, send)
