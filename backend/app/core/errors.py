"""Domain exceptions and the one place that maps them to HTTP.

Services raise these; they know nothing of HTTP. `install_error_handlers` turns every error that can
reach a client, ours or the framework's, into `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

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

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(AppError):
    status_code, code = 400, "bad_request"


class UnauthorizedError(AppError):
    status_code, code = 401, "unauthorized"


class ForbiddenError(AppError):
    status_code, code = 403, "forbidden"


class NotFoundError(AppError):
    status_code, code = 404, "not_found"


class ConflictError(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLargeError(AppError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(AppError):
    status_code, code = 415, "unsupported_media_type"


class InvalidInputError(AppError):
    status_code, code = 422, "invalid_input"


class InvalidAudioError(AppError):
    """The upload is not decodable audio."""

    status_code, code = 422, "invalid_audio"


class OverloadedError(AppError):
    """A model's queue is full; the client should retry later."""

    status_code, code = 503, "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


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


class ModelLoadError(Exception):
    """A model file is missing or unreadable. Raised at start-up, never to a client."""


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


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
    }.get(status, "http_error")


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
        parts.append(f"{location}: {err.get('msg', 'invalid')}" if location else err.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and HTTP errors to the JSON error shape."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", _describe_validation(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(_status_code_name(exc.status_code), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
