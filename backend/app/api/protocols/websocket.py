"""What the WebSocket protocols share: sends that give up on a client that stops reading, a
receive that notices it, times out an idle client and ends a session at its limit, and the last
words before a close."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from backend.app.api.protocols.errors import ProtocolError
from backend.app.core.errors import ClientGone

SEND_TIMEOUT_S = 10.0
"""A send that cannot go out for this long (the client stopped reading) gives the client up."""

_POLL_S = 1.0


class Limit(Exception):
    """The session ends: idle too long, or at its length limit (`reason` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender:
    """One writer at a time (the session's tasks and the receive loop all send), each send with a
    deadline: past it the client is given up on, and every later send fails at once."""

    def __init__(self, websocket: WebSocket, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.websocket = websocket
        self.timeout_s = timeout_s
        self.gone = False
        self._lock = asyncio.Lock()

    async def text(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def _send(self, message: dict[str, Any]) -> None:
        if self.gone:
            raise ClientGone
        async with self._lock:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that comes
            # as the send completes, and a reply cut at that moment would then play on.
            deadline = asyncio.timeout(self.timeout_s)
            try:
                async with deadline:
                    await self.websocket.send(message)
            except TimeoutError:
                if not deadline.expired():
                    raise
                self.gone = True
                raise ClientGone from None


class Receiver:
    """The client's next message, within the session's limits."""

    def __init__(
        self, websocket: WebSocket, sender: Sender, idle_timeout_s: float, max_session_s: float
    ) -> None:
        self.websocket = websocket
        self.sender = sender
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = max_session_s
        self.opened = self.last = time.monotonic()

    async def next(self, busy: Callable[[], bool]) -> MutableMapping[str, Any]:
        """The next ASGI message. Raises `ClientGone` once a send gave up, `Limit` when nothing came
        for the idle timeout (unless `busy()`: a reply is being made) or the session is over."""
        while True:
            if self.sender.gone:
                raise ClientGone
            now = time.monotonic()
            if now - self.opened >= self.max_session_s:
                raise Limit("session_limit")
            try:
                poll = min(_POLL_S, self.idle_timeout_s)
                message = await asyncio.wait_for(self.websocket.receive(), poll)
            except TimeoutError:
                if busy():
                    self.last = time.monotonic()  # the idle time counts from the reply's end
                elif time.monotonic() - self.last >= self.idle_timeout_s:
                    raise Limit("idle_timeout") from None
                continue
            self.last = time.monotonic()
            return message


async def close_with(websocket: WebSocket, event: dict[str, Any], error: ProtocolError) -> None:
    """Send `event` (the protocol's error, in its shape), then close with the error's code; a
    client already gone is fine."""
    try:
        await asyncio.wait_for(websocket.send_text(json.dumps(event)), SEND_TIMEOUT_S)
        await websocket.close(error.close_code, reason=error.message[:120])
    except (WebSocketDisconnect, RuntimeError, TimeoutError):
        pass
