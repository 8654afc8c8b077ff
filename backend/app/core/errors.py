"""Domain exceptions and the one place that maps them to HTTP.

Services raise these; they know nothing of HTTP. `install_error_handlers` turns every error that can
reach a client, ours or the framework's, into `{"error": {"code", "message"}}`; under /v1 (the
OpenAI-compatible routes) into OpenAI's `{"error": {"message", "type", "param", "code"}}`, with the
status codes OpenAI uses (a malformed request is a 400 there, never a 422).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class AppError(Exception):
    """Base of every error a client may see. Subclasses fix the HTTP status and code."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.param = param
        """The request field at fault, when there is one (reported by the OpenAI-compatible routes)."""


class BadRequestError(AppError):
    status_code, code = 400, "bad_request"


class UnauthorizedError(AppError):
    status_code, code = 401, "unauthorized"


class ForbiddenError(AppError):
    status_code, code = 403, "forbidden"


class NotFoundError(AppError):
    status_code, code = 404, "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ConflictError(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLargeError(AppError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(AppError):
    status_code, code = 415, "unsupported_media_type"


class InvalidInputError(AppError):
    status_code, code = 422, "invalid_input"


class TextTooLongError(PayloadTooLargeError):
    """Text over MAX_TTS_CHARS (synthesis, chat, optimisation)."""

    code = "text_too_long"


class AudioTooLongError(InvalidInputError):
    """Decoded audio longer than MAX_AUDIO_SECONDS: checked before any inference."""

    code = "audio_too_long"


class ContextLengthError(AppError):
    """The messages plus the requested completion do not fit the model's context."""

    status_code, code = 400, "context_length_exceeded"


class InvalidAudioError(AppError):
    """The upload is not decodable audio."""

    status_code, code = 422, "invalid_audio"


class OverloadedError(AppError):
    """A model's queue is full; the client should retry later."""

    status_code, code = 503, "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class QuotaError(AppError):
    """An API key's quota is used up (requests a minute, audio a day, sessions at once)."""

    status_code, code = 429, "rate_limited"

    def __init__(self, message: str, code: str, retry_after_s: int | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)} if retry_after_s else None)
        self.code = code


class StageTimeoutError(AppError):
    """A model stage did not finish within its timeout (STT_TIMEOUT_S, LLM_TIMEOUT_S, TTS_TIMEOUT_S)."""

    status_code, code = 504, "timeout"

    def __init__(self, stage: str, timeout_s: float) -> None:
        super().__init__(f"the {stage} stage did not finish within {timeout_s:g} s")
        self.stage = stage


class NotReadyError(AppError):
    status_code, code = 503, "not_ready"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class UpstreamError(AppError):
    """The configured OpenAI-compatible server failed or could not be reached.

    Answered as 503 (the contract's "service unavailable") with Retry-After: the fault is not the
    client's, and the LLM server may be back shortly.
    """

    status_code, code = 503, "upstream_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class StorageFullError(AppError):
    """No room left on the disk for the conversation database, reply audio or voices (507)."""

    status_code, code = 507, "insufficient_storage"


class StorageUnavailableError(AppError):
    """The conversation database or a data directory cannot be used right now (503)."""

    status_code, code = 503, "storage_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "30"})


def storage_error(e: OSError, what: str) -> AppError:
    """The client-facing error for a failed write of `what`: 507 when the disk is full."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"no space left on the disk for {what}; the server's operator must free some")
    return StorageUnavailableError(f"could not write {what} ({e.strerror or e})")


class InternalError(AppError):
    """A fault of ours, reported to a client that is waiting for an answer (a realtime response
    must end with an error, never in silence); the details are in the server's log."""

    status_code, code = 500, "internal_error"


class ClientGone(Exception):
    """The client can no longer be reached (it closed the connection, or stopped reading): its
    connection, and the session under it, are ending. Not an error to tell anyone."""


class StorageOpenError(Exception):
    """The conversation database cannot be opened or is damaged. Raised at start-up, never to a client."""


class ModelLoadError(Exception):
    """A model file is missing or unreadable. Raised at start-up, never to a client."""


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def is_openai_path(path: str) -> bool:
    """The OpenAI-compatible routes, whose errors take OpenAI's shape."""
    return path == "/v1" or path.startswith("/v1/")


def _openai_status(status: int) -> int:
    # OpenAI answers 400 for every malformed request: a wrong type, a bad value, an unreadable file.
    return 400 if status in (415, 422) else status


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def is_ququ_path(path: str) -> bool:
    """QuQu's routes (/api/...), whose errors take its shape: `{"success": false, "error": ...}`."""
    return path == "/api" or path.startswith("/api/")


def error_response_parts(
    path: str, status: int, code: str | None, message: str, param: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The status and body of an error on `path`: our shape, OpenAI's under /v1, QuQu's under /api."""
    if is_ququ_path(path):
        return status, {"success": False, "error": message, "code": code or _status_code_name(status)}
    if not is_openai_path(path):
        return status, error_body(code or _status_code_name(status), message)
    status = _openai_status(status)
    if code == "unauthorized":
        code = "invalid_api_key"
    body = {"message": message, "type": _openai_type(status), "param": param, "code": code}
    return status, {"error": body}


def _error_response(
    request: Request,
    status: int,
    code: str | None,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    status, body = error_response_parts(request.url.path, status, code, message, param)
    return JSONResponse(body, status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "invalid_input",
        429: "too_many_requests",
        504: "timeout",
        507: "insufficient_storage",
    }.get(status, "http_error")


def _location(err: Any) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        location = _location(err)
        parts.append(f"{location}: {err.get('msg', 'invalid')}" if location else err.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and HTTP errors to the JSON error shape."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return _error_response(
            request, exc.status_code, exc.code, exc.message, exc.param, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = next(iter(exc.errors()), None)
        param = (_location(first) or None) if first else None
        return _error_response(request, 422, "invalid_input", _describe_validation(exc), param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and is_openai_path(request.url.path):
            message = f"Invalid URL ({request.method} {request.url.path})"
        return _error_response(
            request,
            exc.status_code,
            _status_code_name(exc.status_code),
            message,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return _error_response(request, 500, "internal_error", "internal server error")
