"""ASGI middleware: request ids and access lines, the request-body limit, and cancellation of work
whose client has gone (API keys are `core/auth.py`'s).

Pure ASGI (no BaseHTTPMiddleware), so streamed responses and WebSockets pass through untouched.
Outermost first: RequestContext -> CORS -> ApiKey (core/auth.py) -> BodySizeLimit -> JSONGuard ->
CancelOnDisconnect -> app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.app.core.errors import InvalidInputError, error_response_parts
from backend.app.core.json_guard import check_json_bytes
from backend.app.core.logs import request_id
from backend.app.core.metrics import HttpMetrics
from backend.app.core.worker import stage_times

access_log = logging.getLogger("backend.app.access")
error_log = logging.getLogger("backend.app.errors")

REQUEST_ID_HEADER = "x-request-id"
# A client's own request id is kept when it is short and plain (it is logged and echoed back).
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Logged when the client went away before the response was complete (nginx's convention).
CLIENT_CLOSED = 499

# Multipart framing and form fields around the file itself.
_MULTIPART_SLACK = 64 * 1024


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str],
    param: str | None = None,
) -> None:
    """Answer with the JSON error of `path` (ours, OpenAI's under /v1, QuQu's under /api)."""
    status, payload = error_response_parts(scope["path"], status, code, message, param)
    body = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Gives each request an id (the client's `X-Request-ID` when plain, else a new one), echoes
    it in the response's `X-Request-ID`, and writes one access line when the request ends: method,
    route, status, duration, the API key's name (`key`, when keys are configured) and per-stage
    milliseconds (`stages`: time each model spent on it)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = supplied if _CLIENT_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        timings: dict[str, float] = {}
        rid_token, timings_token = request_id.set(rid), stage_times.set(timings)
        status: int | None = None
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            elif message["type"] == "websocket.accept":
                status = 101
                if self.metrics is not None:
                    self.metrics.sessions.inc()
            elif message["type"] == "websocket.close" and status is None:
                status = 403  # refused before the handshake completed
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            # The one place an unexpected error ends: logged with the request id, answered with a
            # plain 500 and not re-raised, so the server keeps the keep-alive connection usable. A
            # response already under way cannot change its status: the connection is closed.
            error_log.error(
                "unhandled error in %s %s (request %s)",
                scope.get("method", "WS"),
                scope["path"],
                rid,
                exc_info=e,
            )
            if status is not None or scope["type"] != "http":
                status = status or 500
                raise
            status = 500
            await send_error(scope, send_with_id, 500, "internal_error", "internal server error", {})
        finally:
            route: str | None = getattr(scope.get("route"), "path", None)
            seconds = time.perf_counter() - started
            fields: dict[str, Any] = {
                "method": scope.get("method", "WS"),
                "route": route or scope["path"],
                "status": status or CLIENT_CLOSED,
                "ms": round(seconds * 1000, 1),
            }
            if self.metrics is not None:
                if status == 101:
                    self.metrics.sessions.dec()
                self.metrics.observe_request(fields["method"], route, fields["status"], seconds)
            key = scope.get("state", {}).get("key_name")
            if key is not None:
                fields["key"] = key  # the API key's name (core/auth.py), never the key
            if timings:
                fields["stages"] = {f"{name}_ms": round(ms, 1) for name, ms in timings.items()}
            client = scope.get("client")
            if client:
                fields["client"] = client[0]
            access_log.info("%s %s %s", fields["method"], fields["route"], fields["status"], extra=fields)
            request_id.reset(rid_token)
            stage_times.reset(timings_token)


class _BodyTooLarge(Exception):
    """Raised from `receive` once a body passes the limit; turned into a 413."""


class BodySizeLimitMiddleware:
    """Refuses request bodies over the limit (413) without reading them into memory: at once when
    the declared Content-Length is over it, else as soon as the bytes received pass it (a chunked
    body, or one that lies about its length). The connection is then closed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes + _MULTIPART_SLACK

    async def _refuse(self, scope: Scope, send: Send) -> None:
        limit_mb = (self.max_bytes - _MULTIPART_SLACK) / 1024 / 1024
        message = f"the request body is larger than the {limit_mb:g} MB limit (MAX_UPLOAD_MB)"
        await send_error(scope, send, 413, "payload_too_large", message, {"connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await send_error(scope, send, 400, "bad_request", "invalid Content-Length", {})
                return
            if length > self.max_bytes:
                await self._refuse(scope, send)
                return
        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return
                started = True
                if over:  # whatever the app made of the broken body, the answer is a 413
                    await self._refuse(scope, send)
                    return
            elif over:
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                started = True
                await self._refuse(scope, send)


def _is_json(scope: Scope) -> bool:
    header: bytes = dict(scope["headers"]).get(b"content-type", b"")
    content_type = header.split(b";")[0].strip().lower()
    return content_type == b"application/json" or content_type.endswith(b"+json")


class JSONGuardMiddleware:
    """Checks every JSON request body (`check_json_bytes`) before the app reads it; a body that
    fails is answered 422 (400 under /v1) without reaching a route. The body is then replayed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json_bytes(body)
        except InvalidInputError as e:
            await send_error(scope, send, e.status_code, e.code, e.message, {}, param=e.param)
            return
        except ValueError:
            pass  # malformed JSON: the route's own parser says so, in its own words
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CancelOnDisconnectMiddleware:
    """Cancels the handling of a request whose client disconnects before the response is complete.

    Once the app has read the whole body, this middleware listens for the server's disconnect
    event; on it, the request's task is cancelled, which drops its queued model work and stops its
    running work (see `core.worker`), so a client that gives up frees its slot. Streamed responses
    already stop on disconnect; this covers the plain request/response routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        bodyless = b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") == b"0"
        replay: Message | None = await receive() if bodyless else None
        body_read = asyncio.Event()
        gone = asyncio.Event()
        if replay is not None:
            body_read.set()
            if replay["type"] == "http.disconnect":
                return
        complete = False

        async def app_receive() -> Message:
            nonlocal replay
            if replay is not None:
                message, replay = replay, None
                return message
            if body_read.is_set():
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read.set()
            elif message["type"] == "http.disconnect":
                gone.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        async def handle() -> None:
            await self.app(scope, app_receive, app_send)

        handler = asyncio.create_task(handle())

        async def watch() -> None:
            await body_read.wait()
            message = await receive()  # the server's disconnect: client gone, or response done
            gone.set()
            if message["type"] == "http.disconnect" and not complete:
                handler.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server itself is cancelling this request (shutdown)
            # The client went away: nobody is left to answer; the access line says 499.
        finally:
            watcher.cancel()
