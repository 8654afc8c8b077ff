"""The errors every wire protocol shares (our WebSocket, OpenAI's Realtime, Wyoming).

`ProtocolError` ends a connection: the client broke the protocol, or the connection reached one
of its limits. Each protocol tells it in its own shape (an `error` event) and then closes; on a
WebSocket with `close_code`. A client gone is `ClientGone` (core/errors.py): the session beneath a
protocol meets it too, when a listener can no longer reach its client. What a client asked that
cannot be done now is an `AppError`, told and survived, as on HTTP.
"""

from __future__ import annotations

POLICY_VIOLATION = 1008
"""The WebSocket close code of a protocol mistake."""


class ProtocolError(Exception):
    """The connection ends: an error event with `message` and `code`, then the close."""

    def __init__(
        self, message: str, code: str = "protocol_error", close_code: int = POLICY_VIOLATION
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.close_code = close_code
