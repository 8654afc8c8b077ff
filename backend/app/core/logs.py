"""Logging set-up: one JSON object a line (LOG_FORMAT=json, the default) or plain text.

Every record logged while a request is handled carries its request id (`request_id`). Access lines
(logger `backend.app.access`, one per request, written by `RequestContextMiddleware`) add the route,
status, duration, the API key's name (`key`) and the milliseconds each model stage spent on the
request. Secrets never reach a log line: no header or query string is logged, the settings hold keys
as `SecretStr`, an API key is known by its name only (`core/keys.py`), and the libraries that print
handshake headers at DEBUG have the keys in them redacted (`RedactCredentials`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import time
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


_CREDENTIALS = (
    (re.compile(r"(?i)(authorization:\s*(?:bearer\s+|basic\s+)?)\S+"), r"\1<redacted>"),
    (re.compile(r"(bearer\.|openai-insecure-api-key\.)[^\s,'\"\]]+"), r"\1<redacted>"),
    # A password in a URL (LLM_BASE_URL, DATABASE_URL): http://user:secret@host -> http://user:***@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE), r"\1***@"),
)

HANDSHAKE_LOGGERS = ("uvicorn.error", "uvicorn.asgi", "websockets.server", "httpx", "httpx2", "openai")
"""Loggers of other libraries that print credentials: websockets logs every handshake header
(`Authorization`, the subprotocols a browser's key travels in) at DEBUG through uvicorn's logger,
uvicorn's TRACE prints each scope's subprotocols, and the HTTP clients print each request's URL
(a password in LLM_BASE_URL with it)."""


class RedactCredentials(logging.Filter):
    """Rewrites a record that prints a bearer token or a key subprotocol, with the key redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redacted = record.getMessage()
        for pattern, replacement in _CREDENTIALS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_credentials() -> None:
    """Put `RedactCredentials` on the loggers that print handshakes (once), whatever handlers the
    logging has: ours (`configure_logging`) or uvicorn's own when it is run directly."""
    for name in HANDSHAKE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, ...extra fields, "exc"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines; access lines and request ids are appended as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        rid = getattr(record, "request_id", None)
        if rid:
            fields = {"request_id": rid, **fields}
        if fields:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return line


def configure_logging(level: str, fmt: str) -> None:
    """Route our records and uvicorn's through one handler on stderr, in `fmt` (json|text)."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": _RequestIdFilter}, "redact": {"()": RedactCredentials}},
            "formatters": {"main": {"()": JsonFormatter if fmt == "json" else TextFormatter}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "main",
                    "filters": ["request_id", "redact"],
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": level.upper(), "handlers": ["stderr"]},
            "loggers": {
                # uvicorn's own handlers are replaced by ours; its access log by our access lines.
                "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
                "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
                "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
                # faster-whisper logs every file's duration at INFO: that is the access line's job.
                "faster_whisper": {"level": "WARNING" if level.lower() != "debug" else "DEBUG"},
                # The HTTP clients log every request at INFO (each token count asked of llama.cpp).
                "httpx": {"level": "WARNING" if level.lower() != "debug" else "DEBUG"},
                "httpx2": {"level": "WARNING" if level.lower() != "debug" else "DEBUG"},
            },
        }
    )
