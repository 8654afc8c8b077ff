"""What a Wyoming client can reach. Wyoming has no authentication: when the HTTP API needs a key
(API_KEY or API_KEYS_FILE), Wyoming's conversations are its own (`wyoming-...` ids, whatever id a
client names) and, unless WYOMING_PUBLIC is set, it listens on this machine only."""

from __future__ import annotations

import contextlib
import hashlib

from backend.app.core.config import Settings
from backend.app.core.errors import AppError
from backend.app.services.history import check_conversation_id

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def auth_configured(settings: Settings) -> bool:
    """The HTTP API needs a key (API_KEY or API_KEYS_FILE)."""
    server = settings.server
    return server.api_key is not None or server.api_keys_file is not None


WYOMING_PREFIX = "wyoming-"


def conversation_id(given: object, own: bool = False) -> str:
    """Home Assistant's conversation id when it is one of ours (ULIDs are), else a stable id made
    from it; a new id when there is none. With `own` (the HTTP routes need a key, Wyoming has no
    authentication), every id is one of Wyoming's own (`wyoming-...`): a Wyoming client can
    never reach a conversation made over HTTP."""
    if not isinstance(given, str) or not given:
        return (WYOMING_PREFIX if own else "") + check_conversation_id(None)
    if not own or given.startswith(WYOMING_PREFIX):
        with contextlib.suppress(AppError):
            return check_conversation_id(given)
    return WYOMING_PREFIX + hashlib.sha256(given.encode("utf-8", "surrogatepass")).hexdigest()[:32]
